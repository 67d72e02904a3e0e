//! Signing keys and public keys: ECDSA P-256 (the default) and Ed25519.
//!
//! # Formats
//! - Private keys are PKCS#8 v1 PEM (`-----BEGIN PRIVATE KEY-----`). Ed25519 keys are written
//!   without the optional embedded public key (PKCS#8 v2), which OpenSSL 1.1 and Python
//!   `cryptography` refuse. SEC1 `EC PRIVATE KEY` files are also read. Encrypted PKCS#8 is
//!   refused with a hint on how to decrypt it.
//! - Public keys are SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC KEY-----`), LF line endings,
//!   64-column base64: byte for byte what OpenSSL and Python `cryptography` write.
//! - The **keyid** of a key is the lowercase hex SHA-256 of that canonical public PEM text. It is
//!   what Witness and OpenSSF Model Signing use (the latter calls it the public-key "hint").
//!
//! # Signatures
//! ECDSA P-256 signs SHA-256 of the message (RFC 6979 nonces) and encodes signatures as ASN.1
//! DER; Ed25519 signatures are the raw 64 bytes. These are the encodings DSSE implementations
//! such as `securesystemslib` and `model_signing` expect.
//!
//! **Low-S only.** An ECDSA signature `(r, s)` has a twin `(r, n - s)` that verifies too, so
//! anyone can turn a signed file into a second, differently hashed file with the same signed
//! content. trainprov names attestations by the SHA-256 of the file (approvals,
//! `reproduction-of`), so [`SigningKey::sign`] always writes the low-S form (`s <= n / 2`) and
//! [`PublicKey::verify`] rejects the high-S form (as Bitcoin's BIP 62 and libsecp256k1 do).
//! [`PublicKey::verify_allowing_high_s`] accepts both; it exists for OpenSSF model signatures
//! only, which OpenSSL-based signers such as `model_signing` write with a high S half of the
//! time and which nothing names by digest. Ed25519 is not malleable this way (`verify_strict`
//! also rejects non-canonical encodings). P-384 keys are not supported.
//!
//! File I/O lives in [`crate::keyfile`]; this module only converts between bytes and keys.

use ed25519_dalek::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _, EncodePrivateKey as _};
use ed25519_dalek::pkcs8::{EncodePublicKey as _, KeypairBytes};
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::pkcs8::der::pem::LineEnding;
use rand_core::OsRng;
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use crate::error::KeyParseError;

/// The signature algorithms trainprov can sign and verify with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyAlgorithm {
    /// ECDSA over NIST P-256 with SHA-256, DER signatures. Accepted by every verifier we test
    /// against, including `model_signing` (which supports EC keys only).
    EcdsaP256,
    /// Ed25519 (RFC 8032), raw 64-byte signatures.
    Ed25519,
}

impl KeyAlgorithm {
    /// A short name for humans and JSON output (`ecdsa-p256`, `ed25519`).
    pub fn name(self) -> &'static str {
        match self {
            KeyAlgorithm::EcdsaP256 => "ecdsa-p256",
            KeyAlgorithm::Ed25519 => "ed25519",
        }
    }

    /// The securesystemslib key type (`ecdsa`, `ed25519`).
    pub fn sslib_keytype(self) -> &'static str {
        match self {
            KeyAlgorithm::EcdsaP256 => "ecdsa",
            KeyAlgorithm::Ed25519 => "ed25519",
        }
    }

    /// The securesystemslib signature scheme (`ecdsa-sha2-nistp256`, `ed25519`).
    pub fn sslib_scheme(self) -> &'static str {
        match self {
            KeyAlgorithm::EcdsaP256 => "ecdsa-sha2-nistp256",
            KeyAlgorithm::Ed25519 => "ed25519",
        }
    }
}

impl std::fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

enum SigningInner {
    P256(p256::ecdsa::SigningKey),
    Ed25519(ed25519_dalek::SigningKey),
}

/// A private key that can sign. It has no `Debug` or `Clone`, and the underlying key material
/// is zeroed on drop by the RustCrypto types it wraps.
pub struct SigningKey {
    inner: SigningInner,
}

impl SigningKey {
    /// Generates a fresh key from the operating system's random source.
    pub fn generate(algorithm: KeyAlgorithm) -> Self {
        let inner = match algorithm {
            KeyAlgorithm::EcdsaP256 => {
                SigningInner::P256(p256::ecdsa::SigningKey::random(&mut OsRng))
            }
            KeyAlgorithm::Ed25519 => {
                SigningInner::Ed25519(ed25519_dalek::SigningKey::generate(&mut OsRng))
            }
        };
        SigningKey { inner }
    }

    /// Parses a PEM private key: PKCS#8 (`PRIVATE KEY`) for either algorithm, or SEC1
    /// (`EC PRIVATE KEY`) for P-256.
    pub fn from_pem(text: &str) -> Result<Self, KeyParseError> {
        let (label, der) = decode_pem(text)?;
        let der = Zeroizing::new(der);
        match label.as_str() {
            "PRIVATE KEY" => Self::from_pkcs8_der(&der),
            "EC PRIVATE KEY" => {
                let secret =
                    p256::SecretKey::from_sec1_der(&der).map_err(|e| KeyParseError::Malformed {
                        detail: format!("not a P-256 SEC1 private key ({e})"),
                    })?;
                Ok(SigningKey {
                    inner: SigningInner::P256(secret.into()),
                })
            }
            "ENCRYPTED PRIVATE KEY" => Err(KeyParseError::Encrypted),
            "PUBLIC KEY" => Err(KeyParseError::WrongKind {
                found: "a public key",
                expected: "a private key (the .key file written by `trainprov keygen`)",
            }),
            other => Err(KeyParseError::UnexpectedLabel {
                label: other.to_string(),
            }),
        }
    }

    fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyParseError> {
        let oid = pkcs8_algorithm(der)?;
        match oid.as_str() {
            OID_EC_PUBLIC_KEY => {
                let secret = p256::SecretKey::from_pkcs8_der(der).map_err(|_| {
                    KeyParseError::Unsupported {
                        detail: "an EC key on a curve other than P-256".into(),
                    }
                })?;
                Ok(SigningKey {
                    inner: SigningInner::P256(secret.into()),
                })
            }
            OID_ED25519 => {
                let key = ed25519_dalek::SigningKey::from_pkcs8_der(der).map_err(|e| {
                    KeyParseError::Malformed {
                        detail: format!("bad Ed25519 PKCS#8 key ({e})"),
                    }
                })?;
                Ok(SigningKey {
                    inner: SigningInner::Ed25519(key),
                })
            }
            other => Err(KeyParseError::Unsupported {
                detail: describe_oid(other),
            }),
        }
    }

    /// The PKCS#8 v1 PEM encoding of this key (LF line endings), zeroed when dropped.
    pub fn to_pkcs8_pem(&self) -> Zeroizing<String> {
        let pem = match &self.inner {
            SigningInner::P256(k) => p256::SecretKey::from(k).to_pkcs8_pem(LineEnding::LF),
            SigningInner::Ed25519(k) => {
                // Build the v1 structure by hand: `public_key: None` leaves out the [1] field.
                let bytes = KeypairBytes {
                    secret_key: k.to_bytes(),
                    public_key: None,
                };
                bytes.to_pkcs8_pem(LineEnding::LF)
            }
        };
        // Encoding a well-formed in-memory key cannot fail; an error here is a library bug.
        pem.expect("encoding an in-memory private key as PKCS#8 PEM")
    }

    /// The algorithm of this key.
    pub fn algorithm(&self) -> KeyAlgorithm {
        match self.inner {
            SigningInner::P256(_) => KeyAlgorithm::EcdsaP256,
            SigningInner::Ed25519(_) => KeyAlgorithm::Ed25519,
        }
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        let inner = match &self.inner {
            SigningInner::P256(k) => PublicInner::P256(*k.verifying_key()),
            SigningInner::Ed25519(k) => PublicInner::Ed25519(k.verifying_key()),
        };
        PublicKey::from_inner(inner)
    }

    /// Signs `message`: DER ECDSA-SHA256 for P-256, raw Ed25519 otherwise.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        match &self.inner {
            SigningInner::P256(k) => {
                let sig: p256::ecdsa::Signature = k.sign(message);
                // `normalize_s` returns the low-S twin only when `s` was high.
                let sig = sig.normalize_s().unwrap_or(sig);
                sig.to_der().as_bytes().to_vec()
            }
            SigningInner::Ed25519(k) => k.sign(message).to_bytes().to_vec(),
        }
    }
}

#[derive(Clone, PartialEq, Eq)]
enum PublicInner {
    P256(p256::ecdsa::VerifyingKey),
    Ed25519(ed25519_dalek::VerifyingKey),
}

/// A public key with its canonical SPKI PEM text and keyid.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    inner: PublicInner,
    pem: String,
    keyid: String,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicKey")
            .field("algorithm", &self.algorithm())
            .field("keyid", &self.keyid)
            .finish()
    }
}

impl PublicKey {
    fn from_inner(inner: PublicInner) -> Self {
        let pem = match &inner {
            PublicInner::P256(k) => p256::PublicKey::from(k).to_public_key_pem(LineEnding::LF),
            PublicInner::Ed25519(k) => k.to_public_key_pem(LineEnding::LF),
        }
        .expect("encoding an in-memory public key as SPKI PEM");
        let keyid = hex::encode(Sha256::digest(pem.as_bytes()));
        PublicKey { inner, pem, keyid }
    }

    /// Parses an SPKI PEM public key (`PUBLIC KEY`).
    pub fn from_pem(text: &str) -> Result<Self, KeyParseError> {
        let (label, der) = decode_pem(text)?;
        match label.as_str() {
            "PUBLIC KEY" => Self::from_spki_der(&der),
            "PRIVATE KEY" | "EC PRIVATE KEY" | "ENCRYPTED PRIVATE KEY" => Err(KeyParseError::WrongKind {
                found: "a private key",
                expected: "a public key (the .pub file written by `trainprov keygen`); never hand private keys to verifiers",
            }),
            other => Err(KeyParseError::UnexpectedLabel { label: other.to_string() }),
        }
    }

    fn from_spki_der(der: &[u8]) -> Result<Self, KeyParseError> {
        let oid = spki_algorithm(der)?;
        let inner = match oid.as_str() {
            OID_EC_PUBLIC_KEY => {
                let key = p256::PublicKey::from_public_key_der(der).map_err(|_| {
                    KeyParseError::Unsupported {
                        detail: "an EC key on a curve other than P-256".into(),
                    }
                })?;
                PublicInner::P256(key.into())
            }
            OID_ED25519 => PublicInner::Ed25519(
                ed25519_dalek::VerifyingKey::from_public_key_der(der).map_err(|e| {
                    KeyParseError::Malformed {
                        detail: format!("bad Ed25519 public key ({e})"),
                    }
                })?,
            ),
            other => {
                return Err(KeyParseError::Unsupported {
                    detail: describe_oid(other),
                })
            }
        };
        Ok(Self::from_inner(inner))
    }

    /// The algorithm of this key.
    pub fn algorithm(&self) -> KeyAlgorithm {
        match self.inner {
            PublicInner::P256(_) => KeyAlgorithm::EcdsaP256,
            PublicInner::Ed25519(_) => KeyAlgorithm::Ed25519,
        }
    }

    /// Canonical SPKI PEM text (LF line endings, trailing newline).
    pub fn to_pem(&self) -> &str {
        &self.pem
    }

    /// Lowercase hex SHA-256 of [`PublicKey::to_pem`].
    pub fn keyid(&self) -> &str {
        &self.keyid
    }

    /// Whether `signature` is a valid signature of `message` by this key. Malformed signatures
    /// (bad DER, wrong length) are simply invalid, and so is an ECDSA signature in its high-S
    /// form (see the module docs).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        self.verify_with(message, signature, false)
    }

    /// Like [`PublicKey::verify`], but an ECDSA signature may be in either S form. Only for
    /// formats whose files are never identified by digest (OpenSSF model signatures).
    pub fn verify_allowing_high_s(&self, message: &[u8], signature: &[u8]) -> bool {
        self.verify_with(message, signature, true)
    }

    fn verify_with(&self, message: &[u8], signature: &[u8], allow_high_s: bool) -> bool {
        match &self.inner {
            PublicInner::P256(k) => match p256::ecdsa::Signature::from_der(signature) {
                Ok(sig) => {
                    (allow_high_s || sig.normalize_s().is_none()) && k.verify(message, &sig).is_ok()
                }
                Err(_) => false,
            },
            PublicInner::Ed25519(k) => match ed25519_dalek::Signature::from_slice(signature) {
                Ok(sig) => k.verify_strict(message, &sig).is_ok(),
                Err(_) => false,
            },
        }
    }
}

const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const OID_ED25519: &str = "1.3.101.112";

fn describe_oid(oid: &str) -> String {
    let name = match oid {
        "1.2.840.113549.1.1.1" => "an RSA key",
        "1.3.101.113" => "an Ed448 key",
        "1.3.101.110" | "1.3.101.111" => "an X25519/X448 key-agreement key",
        _ => "a key of an unknown algorithm",
    };
    format!("{name} (OID {oid}); only ECDSA P-256 and Ed25519 keys are supported")
}

fn decode_pem(text: &str) -> Result<(String, Vec<u8>), KeyParseError> {
    let trimmed = text.trim_start_matches('\u{feff}').trim();
    if trimmed.is_empty() {
        return Err(KeyParseError::Empty);
    }
    if !trimmed.starts_with("-----BEGIN ") {
        return Err(KeyParseError::NotPem);
    }
    // Normalise CRLF so keys edited on Windows still load.
    let normalized = trimmed.replace("\r\n", "\n");
    let (label, der) = p256::pkcs8::der::pem::decode_vec(normalized.as_bytes()).map_err(|e| {
        KeyParseError::Malformed {
            detail: format!("PEM does not decode ({e}); is the file truncated?"),
        }
    })?;
    Ok((label.to_string(), der))
}

fn pkcs8_algorithm(der: &[u8]) -> Result<String, KeyParseError> {
    use p256::pkcs8::der::Decode as _;
    let info =
        p256::pkcs8::PrivateKeyInfo::from_der(der).map_err(|e| KeyParseError::Malformed {
            detail: format!("not a PKCS#8 private key ({e}); is the file truncated?"),
        })?;
    Ok(info.algorithm.oid.to_string())
}

fn spki_algorithm(der: &[u8]) -> Result<String, KeyParseError> {
    use p256::pkcs8::der::Decode as _;
    let info = p256::pkcs8::spki::SubjectPublicKeyInfoRef::from_der(der).map_err(|e| {
        KeyParseError::Malformed {
            detail: format!("not a SubjectPublicKeyInfo public key ({e}); is the file truncated?"),
        }
    })?;
    Ok(info.algorithm.oid.to_string())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const ALL: [KeyAlgorithm; 2] = [KeyAlgorithm::EcdsaP256, KeyAlgorithm::Ed25519];

    #[test]
    fn pem_round_trip_keeps_keyid() {
        for alg in ALL {
            let key = SigningKey::generate(alg);
            let again = SigningKey::from_pem(&key.to_pkcs8_pem()).expect("reparse private");
            assert_eq!(again.public_key(), key.public_key(), "{alg}");
            let public = PublicKey::from_pem(key.public_key().to_pem()).expect("reparse public");
            assert_eq!(public.keyid(), key.public_key().keyid());
            assert_eq!(public.keyid().len(), 64);
        }
    }

    #[test]
    fn ed25519_private_key_is_pkcs8_v1() {
        let key = SigningKey::generate(KeyAlgorithm::Ed25519);
        let (_, der) = decode_pem(&key.to_pkcs8_pem()).expect("pem");
        // SEQUENCE { INTEGER 0 (v1), AlgorithmIdentifier, OCTET STRING } is 48 bytes; v2 adds
        // the public key and the version becomes 1.
        assert_eq!(der.len(), 48);
        assert_eq!(&der[2..5], &[0x02, 0x01, 0x00]);
    }

    #[test]
    fn signatures_verify_and_reject_other_messages() {
        for alg in ALL {
            let key = SigningKey::generate(alg);
            let sig = key.sign(b"hello");
            assert!(key.public_key().verify(b"hello", &sig));
            assert!(!key.public_key().verify(b"hellp", &sig));
            assert!(!key.public_key().verify(b"hello", &sig[..sig.len() - 1]));
            let other = SigningKey::generate(alg);
            assert!(!other.public_key().verify(b"hello", &sig));
        }
    }

    /// `(r, s)` → `(r, n - s)`: the high-S twin of a low-S signature, as DER.
    pub(crate) fn high_s_twin(der: &[u8]) -> Vec<u8> {
        let sig = p256::ecdsa::Signature::from_der(der).expect("DER signature");
        let (r, s) = sig.split_scalars();
        let twin = p256::ecdsa::Signature::from_scalars(r, -*s).expect("twin");
        twin.to_der().as_bytes().to_vec()
    }

    /// Issue 11: a high-S ECDSA signature verified, so one attestation had two files (two
    /// SHA-256s). We only write low S, and only accept it (except where asked).
    #[test]
    fn issue11_ecdsa_high_s_is_rejected_and_never_written() {
        let key = SigningKey::generate(KeyAlgorithm::EcdsaP256);
        for i in 0..64u8 {
            let message = [i; 3];
            let sig = key.sign(&message);
            let parsed = p256::ecdsa::Signature::from_der(&sig).expect("DER");
            assert!(parsed.normalize_s().is_none(), "signature {i} is high-S");
            assert!(key.public_key().verify(&message, &sig));
            let twin = high_s_twin(&sig);
            assert_ne!(twin, sig);
            assert!(
                !key.public_key().verify(&message, &twin),
                "high-S {i} accepted"
            );
            assert!(key.public_key().verify_allowing_high_s(&message, &twin));
        }
    }

    #[test]
    fn wrong_kinds_are_named() {
        let key = SigningKey::generate(KeyAlgorithm::EcdsaP256);
        assert!(matches!(
            SigningKey::from_pem(key.public_key().to_pem()),
            Err(KeyParseError::WrongKind {
                found: "a public key",
                ..
            })
        ));
        assert!(matches!(
            PublicKey::from_pem(&key.to_pkcs8_pem()),
            Err(KeyParseError::WrongKind { .. })
        ));
        assert_eq!(SigningKey::from_pem("").err(), Some(KeyParseError::Empty));
        assert_eq!(
            SigningKey::from_pem("hello").err(),
            Some(KeyParseError::NotPem)
        );
        let encrypted =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMAA=\n-----END ENCRYPTED PRIVATE KEY-----\n";
        assert_eq!(
            SigningKey::from_pem(encrypted).err(),
            Some(KeyParseError::Encrypted)
        );
    }

    #[test]
    fn truncated_pem_is_malformed() {
        let key = SigningKey::generate(KeyAlgorithm::EcdsaP256);
        let pem = key.to_pkcs8_pem();
        let cut = &pem[..pem.len() / 2];
        assert!(matches!(
            SigningKey::from_pem(cut),
            Err(KeyParseError::Malformed { .. })
        ));
    }
}
