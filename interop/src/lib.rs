//! Interoperability tests live in `tests/`; this library only hosts helpers.
