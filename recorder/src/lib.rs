//! Captures what went into and came out of a training run.
//!
//! For now this crate walks and hashes model directories ([`model_tree`]) for OpenSSF model
//! signatures and digests single files ([`file_digest`]); code, data snapshots, environment
//! capture and the registry arrive with the `trainprov run` issue.
//!
//! ```no_run
//! use recorder::model_tree::{hash_model_dir, TreeOptions};
//! let manifest = hash_model_dir(std::path::Path::new("my-model"), &TreeOptions::default())?;
//! println!("{} files, root {}", manifest.files.len(), manifest.root_digest());
//! # Ok::<(), recorder::model_tree::TreeError>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod atomic;
pub mod environment;
pub mod file_digest;
pub mod gpu;
pub mod hash_cache;
pub mod model_tree;
pub mod paths;
pub mod redact;
pub mod snapshot;
