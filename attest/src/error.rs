//! Error types. Each message says what was found and what was expected, and file-level errors
//! name the file, so a CLI can print them as one line.

use std::path::PathBuf;

/// Why bytes could not be read as a key. Carries no path; [`KeyError`] adds it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyParseError {
    /// The file is empty.
    #[error("the key file is empty")]
    Empty,
    /// No PEM armour at all.
    #[error("not a PEM key (expected a line starting with -----BEGIN)")]
    NotPem,
    /// PEM or DER that does not decode.
    #[error("{detail}")]
    Malformed {
        /// What failed.
        detail: String,
    },
    /// A password-protected PKCS#8 key.
    #[error(
        "the private key is encrypted; trainprov reads unencrypted PKCS#8 only \
         (decrypt a copy with `openssl pkcs8 -in KEY -out KEY.plain`, keep it mode 0600)"
    )]
    Encrypted,
    /// A public key where a private key was expected, or the reverse.
    #[error("this is {found}, expected {expected}")]
    WrongKind {
        /// What the file holds.
        found: &'static str,
        /// What the caller needed.
        expected: &'static str,
    },
    /// PEM with a label that holds no key we know (a certificate, say).
    #[error("PEM block '{label}' is not a key (expected PRIVATE KEY or PUBLIC KEY)")]
    UnexpectedLabel {
        /// The label after BEGIN.
        label: String,
    },
    /// A well-formed key of an algorithm we do not support.
    #[error("unsupported key: {detail}")]
    Unsupported {
        /// Which algorithm or curve.
        detail: String,
    },
}

/// Errors reading or writing key files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The file could not be read.
    #[error("{}: cannot read key: {source}", path.display())]
    Read {
        /// The key file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file was read but holds no usable key.
    #[error("{}: {source}", path.display())]
    Parse {
        /// The key file.
        path: PathBuf,
        /// Why it is not usable.
        source: KeyParseError,
    },
    /// A private key and the public key beside it are not a pair.
    #[error(
        "{}: does not match the private key {} (keyid {public_keyid} vs {private_keyid}); \
         regenerate the pair with `trainprov keygen` or remove the stale .pub",
        public.display(), private.display()
    )]
    Mismatch {
        /// The private key file.
        private: PathBuf,
        /// The public key file.
        public: PathBuf,
        /// keyid derived from the private key.
        private_keyid: String,
        /// keyid of the public key file.
        public_keyid: String,
    },
    /// Refusing to overwrite.
    #[error("{}: already exists; choose another --out or pass --force to replace it", path.display())]
    Exists {
        /// The existing file.
        path: PathBuf,
    },
    /// The file could not be written.
    #[error("{}: cannot write key: {source}", path.display())]
    Write {
        /// The key file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Why a DSSE envelope did not verify. Anything in here means: do not trust the payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DsseError {
    /// The envelope's JSON does not have the DSSE shape.
    #[error("not a DSSE envelope: {detail}")]
    NotAnEnvelope {
        /// What is wrong with the shape.
        detail: String,
    },
    /// A base64 field does not decode.
    #[error("{field} is not valid base64")]
    BadBase64 {
        /// Which field (`payload`, `signatures[1].sig`).
        field: String,
    },
    /// The payload type is not the one the caller accepts.
    #[error("payloadType is '{got}', expected '{expected}'")]
    PayloadType {
        /// The type the caller accepts.
        expected: String,
        /// The type in the envelope.
        got: String,
    },
    /// The envelope carries no signatures.
    #[error("the envelope carries no signatures")]
    NoSignatures,
    /// The envelope is larger than verifiers read.
    #[error(
        "{size} bytes is more than the {limit} bytes an envelope may have; is this an attestation?"
    )]
    TooLarge {
        /// The size found.
        size: u64,
        /// [`crate::dsse::MAX_ENVELOPE_BYTES`].
        limit: u64,
    },
    /// Fewer trusted keys signed than the threshold requires.
    #[error("signature check failed: {valid} of the required {threshold} trusted key(s) signed this payload ({detail})")]
    Threshold {
        /// Distinct trusted keys with a valid signature.
        valid: usize,
        /// Distinct trusted keys required.
        threshold: usize,
        /// Per-signature reasons.
        detail: String,
    },
    /// The caller asked for an impossible threshold.
    #[error("threshold {threshold} cannot be met with {keys} trusted key(s)")]
    BadThreshold {
        /// Requested threshold.
        threshold: usize,
        /// Number of trusted keys.
        keys: usize,
    },
}

/// Why a verified payload is not an acceptable in-toto Statement.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StatementError {
    /// The payload is not a JSON object of the Statement shape.
    #[error("payload is not an in-toto Statement: {detail}")]
    Malformed {
        /// The parser's complaint.
        detail: String,
    },
    /// `_type` is not Statement v1.
    #[error("_type is '{got}', expected '{expected}'")]
    Type {
        /// Expected `_type`.
        expected: &'static str,
        /// Actual `_type`.
        got: String,
    },
    /// `predicateType` is not the one the caller accepts.
    #[error("predicateType is '{got}', expected '{expected}'")]
    PredicateType {
        /// Expected predicate type.
        expected: String,
        /// Actual predicate type.
        got: String,
    },
    /// A subject without the digests trainprov requires.
    #[error("subject '{name}' has no {algorithm} digest")]
    MissingDigest {
        /// The subject.
        name: String,
        /// The missing algorithm.
        algorithm: &'static str,
    },
}

/// Why an OpenSSF model signature (`model.sig`) is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ModelSignatureError {
    /// Not a Sigstore bundle of the shape OMS uses.
    #[error("not an OpenSSF model signature bundle: {detail}")]
    NotABundle {
        /// What is wrong.
        detail: String,
    },
    /// The bundle's public-key hint names a key we were not given.
    #[error(
        "signed by a different key: the bundle's key hint is {hint}, trusted keyid(s) {trusted}"
    )]
    KeyHint {
        /// The hint in the bundle.
        hint: String,
        /// The trusted keyids.
        trusted: String,
    },
    /// The DSSE envelope inside did not verify.
    #[error(transparent)]
    Envelope(#[from] DsseError),
    /// The payload is not a Statement.
    #[error(transparent)]
    Statement(#[from] StatementError),
    /// The OMS predicate is malformed or inconsistent.
    #[error("model signature predicate: {detail}")]
    Predicate {
        /// What is wrong.
        detail: String,
    },
    /// A serialization method or hash we do not implement.
    #[error("unsupported model serialization: {detail}")]
    Unsupported {
        /// What is unsupported.
        detail: String,
    },
}
