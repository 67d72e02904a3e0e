//! Signed statements about training runs and models: the attestation core of trainprov.
//!
//! This crate builds and checks the documents that make a fine-tune provable:
//! - [`statement`]: in-toto Statement v1 and ResourceDescriptor, serialized deterministically;
//! - [`slsa`]: the SLSA Provenance v1 predicate trainprov fills for every run;
//! - [`dsse`]: DSSE v1 envelopes (PAE, signing, threshold verification);
//! - [`oms`]: OpenSSF Model Signing v1.0 bundles (`model.sig`);
//! - [`keys`] and [`keyfile`]: ECDSA P-256 and Ed25519 keys, PKCS#8/SPKI PEM, keyids;
//! - [`policy`]: deploy policies (TOML) evaluated over a verified Statement;
//! - [`vsa`]: approvals, as SLSA Verification Summary Attestations.
//!
//! It does no I/O except reading and writing key files in [`keyfile`]: hashing directories and
//! reading attestations from disk belong to the caller. Verification hands back a
//! [`Verified`] value, which cannot be built any other way, so a Statement cannot be used before
//! its signature has been checked.
//!
//! ```
//! use attest::dsse::{Envelope, IN_TOTO_PAYLOAD_TYPE};
//! use attest::keys::{KeyAlgorithm, SigningKey};
//! use attest::slsa::PROVENANCE_V1;
//! use attest::statement::{digest_set_of, ResourceDescriptor, Statement};
//!
//! let key = SigningKey::generate(KeyAlgorithm::EcdsaP256);
//! let subject = ResourceDescriptor::named("adapter_model.safetensors", digest_set_of(b"weights"));
//! let statement = Statement::new(vec![subject], PROVENANCE_V1, serde_json::json!({}));
//! let envelope = Envelope::sign(IN_TOTO_PAYLOAD_TYPE, &statement.to_json()?, &[&key]);
//!
//! let payload = envelope.verify(IN_TOTO_PAYLOAD_TYPE, &[key.public_key()], 1)?;
//! let verified = Statement::<serde_json::Value>::from_verified(payload, Some(PROVENANCE_V1))?;
//! assert_eq!(verified.subject[0].name.as_deref(), Some("adapter_model.safetensors"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod dsse;
pub mod error;
pub mod keyfile;
pub mod keys;
pub mod oms;
pub mod policy;
pub mod slsa;
pub mod statement;
mod verified;
pub mod vsa;

pub use error::{DsseError, KeyError, KeyParseError, ModelSignatureError, StatementError};
pub use verified::Verified;
