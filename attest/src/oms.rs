//! OpenSSF Model Signing (OMS) v1.0 signatures: `model.sig` bundles over a model directory.
//!
//! This module is the format; walking and hashing a directory is the recorder's job
//! (`recorder::model_tree`), which produces a [`ModelManifest`] for this module to sign or
//! compare.
//!
//! # The bundle (`model.sig`)
//! A Sigstore bundle v0.3 in JSON, signed with a key rather than a Fulcio certificate:
//! ```json
//! {"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json",
//!  "verificationMaterial":{"publicKey":{"hint":"<keyid>"},"tlogEntries":[]},
//!  "dsseEnvelope":{"payload":"<base64 Statement>","payloadType":"application/vnd.in-toto+json",
//!                  "signatures":[{"sig":"<base64 DER ECDSA>","keyid":"<keyid>"}]}}
//! ```
//! The hint is the hex SHA-256 of the signer's SPKI PEM, which is also trainprov's keyid; the
//! reference implementation (`model_signing` 1.x) checks it against the verifying key.
//!
//! # The Statement
//! ```json
//! {"_type":"https://in-toto.io/Statement/v1",
//!  "subject":[{"name":"<directory name>","digest":{"sha256":"<root digest>"}}],
//!  "predicateType":"https://model_signing/signature/v1.0",
//!  "predicate":{"serialization":{"method":"files","hash_type":"sha256","allow_symlinks":false,
//!                                "ignore_paths":[".git",".gitattributes",".github",".gitignore","model.sig"]},
//!               "resources":[{"name":"config.json","algorithm":"sha256","digest":"<hex>"},…]}}
//! ```
//! - `resources` lists every file, path relative to the model root with `/` separators, sorted
//!   component by component (the order of Python's `PurePosixPath`, so `a/b` sorts before
//!   `a.txt`).
//! - The **root digest** is SHA-256 over the concatenated *raw* (not hex) digests of the
//!   resources, in the order they are listed. The subject carries it.
//! - The subject name is informative only (the model directory's name).
//!
//! Only the `files` serialization with `sha256` or `blake3` is implemented; `shards` and
//! `blake2` are refused with a clear error.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use crate::dsse::{Envelope, IN_TOTO_PAYLOAD_TYPE};
use crate::error::ModelSignatureError;
use crate::keys::{PublicKey, SigningKey};
use crate::statement::{DigestSet, ResourceDescriptor, Statement};
use crate::verified::Verified;

/// `predicateType` of an OMS v1.0 signature.
pub const OMS_PREDICATE_TYPE: &str = "https://model_signing/signature/v1.0";
/// The Sigstore bundle media type written by `model_signing` 1.x.
pub const BUNDLE_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
const BUNDLE_MEDIA_TYPE_ALT: &str = "application/vnd.dev.sigstore.bundle+json;version=0.3";
/// Default name of the signature file inside the model directory.
pub const SIGNATURE_FILE: &str = "model.sig";
/// Paths `model_signing` ignores by default, and so do we.
pub const GIT_PATHS: [&str; 4] = [".git", ".gitattributes", ".github", ".gitignore"];

/// Per-file hash algorithm of a model manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashAlgorithm {
    /// SHA-256, `model_signing`'s default and the one every verifier has.
    Sha256,
    /// BLAKE3.
    Blake3,
}

impl HashAlgorithm {
    /// The name used in the predicate.
    pub fn name(self) -> &'static str {
        match self {
            HashAlgorithm::Sha256 => "sha256",
            HashAlgorithm::Blake3 => "blake3",
        }
    }

    fn parse(name: &str) -> Result<Self, ModelSignatureError> {
        match name {
            "sha256" => Ok(HashAlgorithm::Sha256),
            "blake3" => Ok(HashAlgorithm::Blake3),
            other => Err(ModelSignatureError::Unsupported {
                detail: format!("hash_type '{other}' (trainprov verifies sha256 and blake3)"),
            }),
        }
    }
}

/// A relative `/`-separated path, ordered component by component like Python's
/// `PurePosixPath`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelPath(String);

impl ModelPath {
    /// Checks that `path` is relative, normalised and free of `.`/`..`/empty components.
    pub fn new(path: impl Into<String>) -> Result<Self, String> {
        let path = path.into();
        let bad = path.is_empty()
            || path.starts_with('/')
            || path.contains('\\')
            || path.contains('\0')
            || path
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..");
        if bad {
            return Err(format!("'{path}' is not a normalised relative path"));
        }
        Ok(ModelPath(path))
    }

    /// The path text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Ord for ModelPath {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.split('/').cmp(other.0.split('/'))
    }
}

impl PartialOrd for ModelPath {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Every file of a model directory with its digest, plus how the list was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelManifest {
    /// Informative name (the directory's name).
    pub model_name: String,
    /// Per-file hash.
    pub hash_type: HashAlgorithm,
    /// Whether symlinks (inside the root) were hashed as the files they point to.
    pub allow_symlinks: bool,
    /// Paths left out, relative to the root, sorted.
    pub ignore_paths: Vec<String>,
    /// Path → lowercase hex digest.
    pub files: BTreeMap<ModelPath, String>,
}

/// How a directory differs from a signed manifest, by file name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ModelDiff {
    /// Signed but not on disk.
    pub missing: Vec<String>,
    /// On disk but not signed.
    pub extra: Vec<String>,
    /// On disk with a different digest.
    pub changed: Vec<String>,
}

impl ModelDiff {
    /// No differences.
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.extra.is_empty() && self.changed.is_empty()
    }
}

impl std::fmt::Display for ModelDiff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        for (label, names) in [
            ("missing", &self.missing),
            ("extra", &self.extra),
            ("changed", &self.changed),
        ] {
            if !names.is_empty() {
                parts.push(format!("{label}: {}", names.join(", ")));
            }
        }
        f.write_str(&parts.join("; "))
    }
}

impl ModelManifest {
    /// SHA-256 over the raw bytes of every file digest, in manifest order, as lowercase hex.
    pub fn root_digest(&self) -> String {
        let mut hasher = Sha256::new();
        for digest in self.files.values() {
            // Digests in a manifest are validated hex; a bad one hashes as nothing and the
            // resulting root cannot match a genuine signature.
            hasher.update(hex::decode(digest).unwrap_or_default());
        }
        hex::encode(hasher.finalize())
    }

    /// The OMS v1.0 Statement for this manifest.
    pub fn to_statement(&self) -> Statement<Value> {
        let mut root = DigestSet::new();
        root.insert("sha256".into(), self.root_digest());
        let resources: Vec<Value> = self
            .files
            .iter()
            .map(|(path, digest)| json!({"name": path.as_str(), "algorithm": self.hash_type.name(), "digest": digest}))
            .collect();
        let predicate = json!({
            "serialization": {
                "method": "files",
                "hash_type": self.hash_type.name(),
                "allow_symlinks": self.allow_symlinks,
                "ignore_paths": self.ignore_paths,
            },
            "resources": resources,
        });
        Statement::new(
            vec![ResourceDescriptor::named(self.model_name.clone(), root)],
            OMS_PREDICATE_TYPE,
            predicate,
        )
    }

    /// Reads a manifest back from an OMS Statement, checking that the root digest in the subject
    /// matches the listed resources.
    pub fn from_statement(statement: &Statement<Value>) -> Result<Self, ModelSignatureError> {
        let bad = |detail: String| ModelSignatureError::Predicate { detail };
        let [subject] = statement.subject.as_slice() else {
            return Err(bad(format!(
                "expected exactly one subject, found {}",
                statement.subject.len()
            )));
        };
        let expected_root = subject
            .digest
            .get("sha256")
            .ok_or_else(|| bad("the subject has no sha256 root digest".into()))?;
        let serialization = &statement.predicate["serialization"];
        match serialization["method"].as_str() {
            Some("files") => {}
            Some(other) => {
                return Err(ModelSignatureError::Unsupported {
                    detail: format!("method '{other}' (trainprov verifies the 'files' method)"),
                })
            }
            None => return Err(bad("serialization.method is missing".into())),
        }
        let hash_type = HashAlgorithm::parse(
            serialization["hash_type"]
                .as_str()
                .ok_or_else(|| bad("serialization.hash_type is missing".into()))?,
        )?;
        let allow_symlinks = match &serialization["allow_symlinks"] {
            Value::Bool(b) => *b,
            Value::String(s) => s.eq_ignore_ascii_case("true"),
            _ => false,
        };
        let ignore_paths = match &serialization["ignore_paths"] {
            Value::Null => Vec::new(),
            Value::Array(items) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            _ => return Err(bad("serialization.ignore_paths is not a list".into())),
        };
        let resources = statement.predicate["resources"]
            .as_array()
            .ok_or_else(|| bad("predicate.resources is missing".into()))?;
        let mut files = BTreeMap::new();
        let mut root = Sha256::new();
        for (index, resource) in resources.iter().enumerate() {
            let field = |key: &str| {
                resource[key]
                    .as_str()
                    .ok_or_else(|| bad(format!("resources[{index}].{key} is missing")))
            };
            let name = field("name")?;
            let algorithm = field("algorithm")?;
            if algorithm != hash_type.name() {
                return Err(bad(format!(
                    "resource '{name}' uses {algorithm}, the serialization says {}",
                    hash_type.name()
                )));
            }
            let digest = field("digest")?.to_ascii_lowercase();
            let raw = hex::decode(&digest)
                .map_err(|_| bad(format!("resource '{name}' has a non-hex digest")))?;
            root.update(&raw);
            let path = ModelPath::new(name).map_err(|e| bad(format!("resource name {e}")))?;
            if files.insert(path, digest).is_some() {
                return Err(bad(format!("resource '{name}' is listed twice")));
            }
        }
        let actual_root = hex::encode(root.finalize());
        if !actual_root.eq_ignore_ascii_case(expected_root) {
            return Err(bad(format!(
                "inconsistent manifest: the subject's root digest is {expected_root} but the resources hash to {actual_root}"
            )));
        }
        Ok(ModelManifest {
            model_name: subject.name.clone().unwrap_or_default(),
            hash_type,
            allow_symlinks,
            ignore_paths,
            files,
        })
    }

    /// Compares the directory as found (`actual`) with this signed manifest.
    pub fn diff(&self, actual: &ModelManifest) -> ModelDiff {
        let mut diff = ModelDiff::default();
        for (path, digest) in &self.files {
            match actual.files.get(path) {
                None => diff.missing.push(path.as_str().to_string()),
                Some(d) if !d.eq_ignore_ascii_case(digest) => {
                    diff.changed.push(path.as_str().to_string())
                }
                Some(_) => {}
            }
        }
        diff.extra = actual
            .files
            .keys()
            .filter(|p| !self.files.contains_key(*p))
            .map(|p| p.as_str().to_string())
            .collect();
        diff
    }
}

/// `verificationMaterial.publicKey` of a key-signed bundle.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicKeyIdentifier {
    /// Hex SHA-256 of the signer's SPKI PEM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// `verificationMaterial` of a bundle.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerificationMaterial {
    /// Present for key-signed bundles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<PublicKeyIdentifier>,
    /// Transparency log entries (always empty for key signing).
    #[serde(default)]
    pub tlog_entries: Vec<Value>,
}

/// A Sigstore bundle carrying an OMS signature: the content of `model.sig`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelSignature {
    /// Bundle media type.
    pub media_type: String,
    /// Key hint and (empty) log entries.
    pub verification_material: VerificationMaterial,
    /// The signed Statement.
    pub dsse_envelope: Envelope,
}

impl ModelSignature {
    /// Signs `manifest` with `key`.
    pub fn sign(manifest: &ModelManifest, key: &SigningKey) -> Result<Self, ModelSignatureError> {
        let payload = manifest.to_statement().to_json()?;
        let envelope = Envelope::sign(IN_TOTO_PAYLOAD_TYPE, &payload, &[key]);
        let hint = Some(key.public_key().keyid().to_string());
        Ok(ModelSignature {
            media_type: BUNDLE_MEDIA_TYPE.into(),
            verification_material: VerificationMaterial {
                public_key: Some(PublicKeyIdentifier { hint }),
                tlog_entries: Vec::new(),
            },
            dsse_envelope: envelope,
        })
    }

    /// Parses `model.sig` bytes.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ModelSignatureError> {
        serde_json::from_slice(bytes).map_err(|e| ModelSignatureError::NotABundle {
            detail: e.to_string(),
        })
    }

    /// Pretty JSON with a trailing newline (deterministic for a given signature).
    pub fn to_json(&self) -> Vec<u8> {
        let mut bytes =
            serde_json::to_vec_pretty(self).expect("serializing a model signature bundle");
        bytes.push(b'\n');
        bytes
    }

    /// Checks the bundle's signature against `trusted` and returns the signed manifest. The
    /// caller then hashes the directory and calls [`ModelManifest::diff`].
    pub fn verify(
        &self,
        trusted: &[PublicKey],
    ) -> Result<Verified<ModelManifest>, ModelSignatureError> {
        if self.media_type != BUNDLE_MEDIA_TYPE && self.media_type != BUNDLE_MEDIA_TYPE_ALT {
            return Err(ModelSignatureError::NotABundle {
                detail: format!(
                    "mediaType is '{}', expected '{BUNDLE_MEDIA_TYPE}'",
                    self.media_type
                ),
            });
        }
        let hint = self
            .verification_material
            .public_key
            .as_ref()
            .and_then(|p| p.hint.clone())
            .filter(|h| !h.is_empty());
        let keys: Vec<PublicKey> = match &hint {
            Some(hint) => trusted
                .iter()
                .filter(|k| k.keyid().eq_ignore_ascii_case(hint))
                .cloned()
                .collect(),
            None => trusted.to_vec(),
        };
        if keys.is_empty() {
            let trusted = trusted
                .iter()
                .map(|k| k.keyid())
                .collect::<Vec<_>>()
                .join(", ");
            return Err(ModelSignatureError::KeyHint {
                hint: hint.unwrap_or_default(),
                trusted,
            });
        }
        // High-S ECDSA is accepted here only: OpenSSL-based signers (`model_signing`) write it
        // half of the time, and no one names a model.sig by its digest (see `crate::keys`).
        let payload = self
            .dsse_envelope
            .verify_allowing_high_s(IN_TOTO_PAYLOAD_TYPE, &keys, 1)?;
        let statement = Statement::<Value>::from_verified(payload, Some(OMS_PREDICATE_TYPE))?;
        let manifest = ModelManifest::from_statement(&statement)?;
        Ok(statement.map(|_| manifest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyAlgorithm;

    fn manifest(files: &[(&str, &[u8])]) -> ModelManifest {
        ModelManifest {
            model_name: "m".into(),
            hash_type: HashAlgorithm::Sha256,
            allow_symlinks: false,
            ignore_paths: vec!["model.sig".into()],
            files: files
                .iter()
                .map(|(p, c)| {
                    (
                        ModelPath::new(*p).expect("path"),
                        hex::encode(Sha256::digest(c)),
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn paths_sort_by_component_like_python() {
        let mut paths: Vec<ModelPath> = ["a.txt", "a/b", "a-b", "B", "a"]
            .iter()
            .map(|p| ModelPath::new(*p).expect("path"))
            .collect();
        paths.sort();
        let order: Vec<&str> = paths.iter().map(ModelPath::as_str).collect();
        // sorted(PurePosixPath(p) for p in ...) in CPython 3.11
        assert_eq!(order, ["B", "a", "a/b", "a-b", "a.txt"]);
    }

    #[test]
    fn bad_paths_are_refused() {
        for p in ["", "/etc/passwd", "a/../b", "./a", "a//b", "a/"] {
            assert!(ModelPath::new(p).is_err(), "{p}");
        }
    }

    #[test]
    fn root_digest_is_sha256_of_raw_digests() {
        let m = manifest(&[("b", b"2"), ("a", b"1")]);
        let mut h = Sha256::new();
        h.update(Sha256::digest(b"1"));
        h.update(Sha256::digest(b"2"));
        assert_eq!(m.root_digest(), hex::encode(h.finalize()));
    }

    #[test]
    fn sign_verify_diff_round_trip() {
        let key = SigningKey::generate(KeyAlgorithm::EcdsaP256);
        let signed = manifest(&[("w.safetensors", b"w"), ("config.json", b"{}")]);
        let sig = ModelSignature::sign(&signed, &key).expect("sign");
        let back = ModelSignature::from_json(&sig.to_json()).expect("parse");
        let verified = back.verify(&[key.public_key()]).expect("verify");
        assert_eq!(*verified, signed);
        let on_disk = manifest(&[("w.safetensors", b"W"), ("extra", b"")]);
        let diff = verified.diff(&on_disk);
        assert_eq!(diff.missing, ["config.json"]);
        assert_eq!(diff.extra, ["extra"]);
        assert_eq!(diff.changed, ["w.safetensors"]);
    }

    /// Issue 11: high-S is refused in attestations but accepted in model.sig, which
    /// `model_signing` (OpenSSL) writes with a high S half of the time.
    #[test]
    fn high_s_model_signature_from_openssl_signers_is_accepted() {
        let key = SigningKey::generate(KeyAlgorithm::EcdsaP256);
        let mut sig = ModelSignature::sign(&manifest(&[("a", b"1")]), &key).expect("sign");
        let raw =
            crate::dsse::decode_base64(&sig.dsse_envelope.signatures[0].sig, "sig").expect("sig");
        sig.dsse_envelope.signatures[0].sig =
            crate::dsse::encode_base64(&crate::keys::tests::high_s_twin(&raw));
        assert!(sig.verify(&[key.public_key()]).is_ok());
    }

    #[test]
    fn other_key_is_refused_by_hint() {
        let key = SigningKey::generate(KeyAlgorithm::EcdsaP256);
        let other = SigningKey::generate(KeyAlgorithm::EcdsaP256);
        let sig = ModelSignature::sign(&manifest(&[("a", b"1")]), &key).expect("sign");
        assert!(matches!(
            sig.verify(&[other.public_key()]),
            Err(ModelSignatureError::KeyHint { .. })
        ));
    }
}
