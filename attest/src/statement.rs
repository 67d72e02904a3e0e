//! in-toto Statement v1 and its ResourceDescriptor.
//!
//! ```json
//! {"_type":"https://in-toto.io/Statement/v1",
//!  "subject":[{"name":"adapter_model.safetensors","digest":{"blake3":"…","sha256":"…"}}],
//!  "predicateType":"https://slsa.dev/provenance/v1","predicate":{…}}
//! ```
//! Serialization is deterministic: struct fields in a fixed order, every map a `BTreeMap`
//! (so digest sets and free-form JSON objects come out with sorted keys), no whitespace.
//! Statements trainprov makes carry both `sha256` (the interoperable algorithm) and `blake3` on
//! every subject; [`Statement::check_subject_digests`] enforces that.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::dsse::VerifiedPayload;
use crate::error::StatementError;
use crate::verified::Verified;

/// `_type` of an in-toto Statement v1.
pub const STATEMENT_TYPE_V1: &str = "https://in-toto.io/Statement/v1";

/// Algorithm name → lowercase hex digest.
pub type DigestSet = BTreeMap<String, String>;

/// The `sha256` + `blake3` digest set of some bytes.
pub fn digest_set_of(bytes: &[u8]) -> DigestSet {
    let mut set = DigestSet::new();
    set.insert("sha256".into(), hex::encode(Sha256::digest(bytes)));
    set.insert("blake3".into(), blake3::hash(bytes).to_hex().to_string());
    set
}

/// An in-toto ResourceDescriptor (attestation spec v1): a named, digested artifact.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceDescriptor {
    /// Name, for products a path relative to the output directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// URI that identifies the resource (e.g. `git+https://…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Digests of the resource.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub digest: DigestSet,
    /// Inline content, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Where the resource can be downloaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download_location: Option<String>,
    /// Media type of the resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// Free-form annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, serde_json::Value>,
}

impl ResourceDescriptor {
    /// A descriptor with a name and digests only.
    pub fn named(name: impl Into<String>, digest: DigestSet) -> Self {
        ResourceDescriptor {
            name: Some(name.into()),
            digest,
            ..Default::default()
        }
    }

    /// Compares `actual` digests with this descriptor's: every algorithm present in both must
    /// agree, and at least one must be shared. Returns the algorithms that disagree.
    pub fn digest_mismatches(&self, actual: &DigestSet) -> Result<(), DigestMismatch> {
        let mut shared = 0;
        let mut differing = Vec::new();
        for (algorithm, expected) in &self.digest {
            if let Some(got) = actual.get(algorithm) {
                shared += 1;
                if !got.eq_ignore_ascii_case(expected) {
                    differing.push(DigestDifference {
                        algorithm: algorithm.clone(),
                        expected: expected.clone(),
                        actual: got.clone(),
                    });
                }
            }
        }
        if shared == 0 {
            return Err(DigestMismatch::NoSharedAlgorithm {
                recorded: self.digest.keys().cloned().collect(),
            });
        }
        if differing.is_empty() {
            Ok(())
        } else {
            Err(DigestMismatch::Differs(differing))
        }
    }
}

/// One algorithm whose digest differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestDifference {
    /// The algorithm.
    pub algorithm: String,
    /// Recorded digest.
    pub expected: String,
    /// Digest of the file on disk.
    pub actual: String,
}

/// Why a file does not match a descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DigestMismatch {
    /// The record uses only algorithms we did not compute.
    NoSharedAlgorithm {
        /// Algorithms in the record.
        recorded: Vec<String>,
    },
    /// At least one digest differs.
    Differs(Vec<DigestDifference>),
}

/// An in-toto Statement v1 with predicate `P` (free-form JSON by default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Statement<P = serde_json::Value> {
    /// Always [`STATEMENT_TYPE_V1`].
    #[serde(rename = "_type")]
    pub statement_type: String,
    /// The artifacts this statement is about.
    pub subject: Vec<ResourceDescriptor>,
    /// URI naming the predicate schema.
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    /// The predicate.
    pub predicate: P,
}

impl<P: Serialize + DeserializeOwned> Statement<P> {
    /// A Statement v1 about `subject`.
    pub fn new(
        subject: Vec<ResourceDescriptor>,
        predicate_type: impl Into<String>,
        predicate: P,
    ) -> Self {
        Statement {
            statement_type: STATEMENT_TYPE_V1.into(),
            subject,
            predicate_type: predicate_type.into(),
            predicate,
        }
    }

    /// Deterministic compact JSON bytes: the DSSE payload.
    pub fn to_json(&self) -> Result<Vec<u8>, StatementError> {
        serde_json::to_vec(self).map_err(|e| StatementError::Malformed {
            detail: e.to_string(),
        })
    }

    /// Requires `sha256` and `blake3` on every subject, as trainprov's own records carry.
    pub fn check_subject_digests(&self) -> Result<(), StatementError> {
        for subject in &self.subject {
            for algorithm in ["sha256", "blake3"] {
                if !subject.digest.contains_key(algorithm) {
                    let name = subject.name.clone().unwrap_or_default();
                    return Err(StatementError::MissingDigest { name, algorithm });
                }
            }
        }
        Ok(())
    }

    /// Parses the payload of a verified envelope as a Statement v1 with `predicateType`
    /// `expected_predicate` (any predicate type when `None`).
    pub fn from_verified(
        payload: VerifiedPayload,
        expected_predicate: Option<&str>,
    ) -> Result<Verified<Statement<P>>, StatementError> {
        #[derive(Deserialize)]
        struct Header {
            #[serde(rename = "_type")]
            statement_type: String,
            #[serde(rename = "predicateType")]
            predicate_type: String,
        }
        let header: Header =
            serde_json::from_slice(payload.payload()).map_err(|e| StatementError::Malformed {
                detail: e.to_string(),
            })?;
        if header.statement_type != STATEMENT_TYPE_V1 {
            return Err(StatementError::Type {
                expected: STATEMENT_TYPE_V1,
                got: header.statement_type,
            });
        }
        if let Some(expected) = expected_predicate {
            if header.predicate_type != expected {
                return Err(StatementError::PredicateType {
                    expected: expected.into(),
                    got: header.predicate_type,
                });
            }
        }
        let statement: Statement<P> =
            serde_json::from_slice(payload.payload()).map_err(|e| StatementError::Malformed {
                detail: e.to_string(),
            })?;
        Ok(Verified::new(statement, payload.signed_by().to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialization_is_deterministic_and_sorted() {
        let predicate = serde_json::json!({"zeta": 1, "alpha": {"b": 2, "a": 1}});
        let s = Statement::new(
            vec![ResourceDescriptor::named("f", digest_set_of(b"x"))],
            "urn:p",
            predicate,
        );
        let a = s.to_json().expect("json");
        let b = s.clone().to_json().expect("json");
        assert_eq!(a, b);
        let text = String::from_utf8(a).expect("utf8");
        assert!(text.starts_with(r#"{"_type":"https://in-toto.io/Statement/v1","subject":[{"name":"f","digest":{"blake3":"#));
        assert!(
            text.ends_with(r#""predicate":{"alpha":{"a":1,"b":2},"zeta":1}}"#),
            "{text}"
        );
    }

    #[test]
    fn digest_comparison_needs_a_shared_algorithm() {
        let rd = ResourceDescriptor::named("f", digest_set_of(b"x"));
        assert_eq!(rd.digest_mismatches(&digest_set_of(b"x")), Ok(()));
        assert!(
            matches!(rd.digest_mismatches(&digest_set_of(b"y")), Err(DigestMismatch::Differs(d)) if d.len() == 2)
        );
        let mut other = DigestSet::new();
        other.insert("md5".into(), "00".into());
        assert!(matches!(
            rd.digest_mismatches(&other),
            Err(DigestMismatch::NoSharedAlgorithm { .. })
        ));
    }
}
