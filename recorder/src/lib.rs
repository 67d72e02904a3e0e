//! Captures what went into and came out of a training run.
//!
//! The data flow is one way: **capture** ([`git`], [`snapshot`], [`environment`], [`gpu`],
//! [`process`], with [`redact`] keeping secrets out) → **record** ([`record::RunRecord`], stored in
//! the [`registry`] and its [`objects`] store) → **attest** (the `attest` crate signs
//! [`record::RunRecord::to_statement`]). [`model_tree`] walks model directories for OpenSSF model
//! signatures.
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
pub mod git;
pub mod gpu;
pub mod hash_cache;
pub mod hub_cache;
pub mod lineage;
pub mod model_tree;
pub mod objects;
pub mod paths;
pub mod process;
pub mod record;
pub mod redact;
pub mod registry;
pub mod replay;
pub mod revocation;
pub mod runner;
pub mod snapshot;
