//! Keeping secrets out of records: environment allow-list, secret-looking names dropped, credentials in URLs redacted.
