//! Treat models and data as untrusted.
//!
//! - [`scan`]: identifies model files by their bytes (safetensors, pickle, PyTorch zip, NumPy
//!   `.npy`, GGUF) and judges them without ever executing a pickle;
//! - [`datacheck`]: poisoning checks for text datasets (JSONL, CSV, JSON, gzip'd or not,
//!   Parquet; chat `messages` rows; every other file listed as unchecked): conflicting
//!   duplicates, near-duplicate clusters compared on what differs between inputs,
//!   rare-n-gram trigger candidates, label shift against a baseline;
//! - [`probe`]: inserts candidate triggers into clean prompts and measures how far an adapter's
//!   completion log-probabilities move, against the base model or a reference adapter.
#![forbid(unsafe_code)]

pub mod datacheck;
pub mod probe;
pub mod scan;
