//! DSSE v1.0 envelopes: pre-authentication encoding, signing, and threshold verification.
//!
//! # Wire format
//! ```json
//! {"payload":"<base64>","payloadType":"application/vnd.in-toto+json",
//!  "signatures":[{"keyid":"<hex sha256 of SPKI PEM>","sig":"<base64>"}]}
//! ```
//! We write standard base64 with padding. We read standard or URL-safe base64, with or
//! without padding, as the DSSE protocol allows.
//!
//! # What is signed: PAE
//! `PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`, where `SP` is one
//! ASCII space and `LEN` is the byte length as ASCII decimal with no leading zeros. Every
//! signature covers the PAE bytes, never the raw payload, so the payload type is authenticated.
//!
//! # Verification
//! [`Envelope::verify`] decodes the payload, checks the payload type, then checks each signature
//! against the trusted keys. A signature with a non-empty `keyid` is only tried against the key
//! with that keyid (as securesystemslib does); one with an empty `keyid` is tried against every
//! key. The envelope passes when at least `threshold` *distinct* trusted keys signed it. Only
//! then does the caller get the payload, wrapped in [`VerifiedPayload`]: nothing in the payload
//! is parsed before its signature has been checked over the PAE (the Statement is parsed by
//! [`crate::statement::Statement::from_verified`], which takes a [`VerifiedPayload`]). ECDSA
//! signatures must be in low-S form (see [`crate::keys`]).
//!
//! # Size
//! Callers read at most [`MAX_ENVELOPE_BYTES`] (16 MiB) of envelope JSON: a signed Statement
//! over 20,000 files is about 3 MiB, so this leaves room while bounding what an unauthenticated
//! file can make a verifier parse and hold.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::error::DsseError;
use crate::keys::{PublicKey, SigningKey};

/// The payload type of in-toto Statements.
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

/// The largest envelope (or Sigstore bundle around one) a verifier reads, in bytes: 16 MiB.
pub const MAX_ENVELOPE_BYTES: u64 = 16 * 1024 * 1024;

/// A DSSE envelope as it appears on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Base64 of the payload bytes.
    pub payload: String,
    /// Media type of the payload.
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    /// One or more signatures over `PAE(payloadType, payload)`.
    pub signatures: Vec<Signature>,
}

/// One signature in an envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    /// Unauthenticated hint naming the key; may be empty.
    #[serde(default)]
    pub keyid: String,
    /// Base64 of the signature bytes.
    pub sig: String,
}

/// The payload of an envelope whose signatures met the threshold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedPayload {
    payload_type: String,
    payload: Vec<u8>,
    signed_by: Vec<String>,
}

impl VerifiedPayload {
    /// The authenticated payload type.
    pub fn payload_type(&self) -> &str {
        &self.payload_type
    }
    /// The authenticated payload bytes.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }
    /// keyids of the trusted keys whose signatures verified, in the order of the key list.
    pub fn signed_by(&self) -> &[String] {
        &self.signed_by
    }
}

/// Pre-authentication encoding of DSSE v1.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + payload_type.len() + 32);
    out.extend_from_slice(
        format!(
            "DSSEv1 {} {} {} ",
            payload_type.len(),
            payload_type,
            payload.len()
        )
        .as_bytes(),
    );
    out.extend_from_slice(payload);
    out
}

const LENIENT: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const STANDARD_LENIENT: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, LENIENT);
const URL_SAFE_LENIENT: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, LENIENT);

/// Decodes base64 as DSSE allows: standard or URL-safe alphabet, padding optional.
pub fn decode_base64(text: &str, field: &str) -> Result<Vec<u8>, DsseError> {
    STANDARD_LENIENT
        .decode(text)
        .or_else(|_| URL_SAFE_LENIENT.decode(text))
        .map_err(|_| DsseError::BadBase64 {
            field: field.to_string(),
        })
}

/// Encodes bytes as standard base64 with padding.
pub fn encode_base64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

impl Envelope {
    /// Signs `payload` with every distinct key in `keys` (at least one); a key given twice signs
    /// once.
    pub fn sign(payload_type: &str, payload: &[u8], keys: &[&SigningKey]) -> Envelope {
        let message = pae(payload_type, payload);
        let mut seen = std::collections::BTreeSet::new();
        // One signature per distinct key: securesystemslib refuses envelopes that repeat a keyid.
        let signatures = keys
            .iter()
            .filter(|key| seen.insert(key.public_key().keyid().to_string()))
            .map(|key| Signature {
                keyid: key.public_key().keyid().to_string(),
                sig: encode_base64(&key.sign(&message)),
            })
            .collect();
        Envelope {
            payload: encode_base64(payload),
            payload_type: payload_type.to_string(),
            signatures,
        }
    }

    /// Parses an envelope from JSON bytes (at most [`MAX_ENVELOPE_BYTES`]).
    pub fn from_json(bytes: &[u8]) -> Result<Envelope, DsseError> {
        if bytes.len() as u64 > MAX_ENVELOPE_BYTES {
            return Err(DsseError::TooLarge {
                size: bytes.len() as u64,
                limit: MAX_ENVELOPE_BYTES,
            });
        }
        serde_json::from_slice(bytes).map_err(|e| DsseError::NotAnEnvelope {
            detail: e.to_string(),
        })
    }

    /// Serializes the envelope as compact JSON (deterministic: fixed field order).
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain strings and vectors cannot fail.
        serde_json::to_vec(self).expect("serializing a DSSE envelope")
    }

    /// Verifies the envelope: payload type first, then signatures from at least `threshold`
    /// distinct keys among `trusted`.
    pub fn verify(
        &self,
        expected_type: &str,
        trusted: &[PublicKey],
        threshold: usize,
    ) -> Result<VerifiedPayload, DsseError> {
        self.verify_with(expected_type, trusted, threshold, false)
    }

    /// [`Envelope::verify`] accepting high-S ECDSA signatures too: for OpenSSF model
    /// signatures only (see [`crate::keys`]).
    pub(crate) fn verify_allowing_high_s(
        &self,
        expected_type: &str,
        trusted: &[PublicKey],
        threshold: usize,
    ) -> Result<VerifiedPayload, DsseError> {
        self.verify_with(expected_type, trusted, threshold, true)
    }

    fn verify_with(
        &self,
        expected_type: &str,
        trusted: &[PublicKey],
        threshold: usize,
        allow_high_s: bool,
    ) -> Result<VerifiedPayload, DsseError> {
        if threshold == 0 || threshold > trusted.len() {
            return Err(DsseError::BadThreshold {
                threshold,
                keys: trusted.len(),
            });
        }
        let payload = decode_base64(&self.payload, "payload")?;
        if self.payload_type != expected_type {
            return Err(DsseError::PayloadType {
                expected: expected_type.to_string(),
                got: self.payload_type.clone(),
            });
        }
        if self.signatures.is_empty() {
            return Err(DsseError::NoSignatures);
        }
        let message = pae(&self.payload_type, &payload);
        let mut signed = vec![false; trusted.len()];
        let mut reasons = Vec::new();
        for (index, signature) in self.signatures.iter().enumerate() {
            let bytes = decode_base64(&signature.sig, &format!("signatures[{index}].sig"))?;
            let candidates: Vec<usize> = if signature.keyid.is_empty() {
                (0..trusted.len()).collect()
            } else {
                trusted
                    .iter()
                    .enumerate()
                    .filter(|(_, k)| k.keyid() == signature.keyid)
                    .map(|(i, _)| i)
                    .collect()
            };
            if candidates.is_empty() {
                reasons.push(format!(
                    "signature {index}: keyid {} is not a trusted key",
                    signature.keyid
                ));
                continue;
            }
            match candidates.into_iter().find(|&i| {
                if allow_high_s {
                    trusted[i].verify_allowing_high_s(&message, &bytes)
                } else {
                    trusted[i].verify(&message, &bytes)
                }
            }) {
                Some(i) => signed[i] = true,
                None => reasons.push(format!("signature {index}: invalid for the trusted key")),
            }
        }
        let valid = signed.iter().filter(|s| **s).count();
        if valid < threshold {
            let detail = if reasons.is_empty() {
                "too few signers".to_string()
            } else {
                reasons.join("; ")
            };
            return Err(DsseError::Threshold {
                valid,
                threshold,
                detail,
            });
        }
        let signed_by = trusted
            .iter()
            .zip(&signed)
            .filter(|(_, s)| **s)
            .map(|(k, _)| k.keyid().to_string())
            .collect();
        Ok(VerifiedPayload {
            payload_type: self.payload_type.clone(),
            payload,
            signed_by,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyAlgorithm;

    /// The test vector from the DSSE specification (protocol.md, "Test Vectors").
    #[test]
    fn pae_matches_the_dsse_specification_vector() {
        let got = pae("http://example.com/HelloWorld", b"hello world");
        assert_eq!(
            got,
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
        assert_eq!(pae("", b""), b"DSSEv1 0  0 ".to_vec());
    }

    #[test]
    fn threshold_counts_distinct_keys() {
        let a = SigningKey::generate(KeyAlgorithm::EcdsaP256);
        let b = SigningKey::generate(KeyAlgorithm::Ed25519);
        let trusted = [a.public_key(), b.public_key()];
        let both = Envelope::sign("t", b"x", &[&a, &b]);
        assert_eq!(
            both.verify("t", &trusted, 2)
                .expect("2 of 2")
                .signed_by()
                .len(),
            2
        );
        let twice_a = Envelope::sign("t", b"x", &[&a, &a]);
        assert!(matches!(
            twice_a.verify("t", &trusted, 2),
            Err(DsseError::Threshold { valid: 1, .. })
        ));
        assert!(twice_a.verify("t", &trusted, 1).is_ok());
        assert!(matches!(
            twice_a.verify("t", &trusted, 3),
            Err(DsseError::BadThreshold { .. })
        ));
    }

    /// Exhaustive: flipping any single bit-0 of any payload or signature byte is rejected, for
    /// both key types.
    #[test]
    fn every_single_byte_change_is_rejected() {
        for alg in [KeyAlgorithm::EcdsaP256, KeyAlgorithm::Ed25519] {
            let key = SigningKey::generate(alg);
            let trusted = [key.public_key()];
            let payload = br#"{"_type":"https://in-toto.io/Statement/v1","subject":[{"name":"a","digest":{"sha256":"00"}}]}"#;
            let envelope = Envelope::sign(IN_TOTO_PAYLOAD_TYPE, payload, &[&key]);
            assert!(envelope.verify(IN_TOTO_PAYLOAD_TYPE, &trusted, 1).is_ok());
            for i in 0..payload.len() {
                let mut changed = payload.to_vec();
                changed[i] ^= 1;
                let mut e = envelope.clone();
                e.payload = encode_base64(&changed);
                assert!(
                    e.verify(IN_TOTO_PAYLOAD_TYPE, &trusted, 1).is_err(),
                    "{alg}: payload byte {i}"
                );
            }
            let sig = decode_base64(&envelope.signatures[0].sig, "sig").expect("sig");
            for i in 0..sig.len() {
                let mut changed = sig.clone();
                changed[i] ^= 1;
                let mut e = envelope.clone();
                e.signatures[0].sig = encode_base64(&changed);
                assert!(
                    e.verify(IN_TOTO_PAYLOAD_TYPE, &trusted, 1).is_err(),
                    "{alg}: signature byte {i}"
                );
            }
            for i in 0..IN_TOTO_PAYLOAD_TYPE.len() {
                let mut changed = IN_TOTO_PAYLOAD_TYPE.as_bytes().to_vec();
                changed[i] ^= 1;
                let changed = String::from_utf8_lossy(&changed).into_owned();
                let mut e = envelope.clone();
                e.payload_type = changed.clone();
                // Accepting the altered type must still fail: the PAE covers the type.
                assert!(
                    e.verify(&changed, &trusted, 1).is_err(),
                    "{alg}: payloadType byte {i}"
                );
            }
        }
    }

    /// Issue 11: the high-S twin of a signature made a second valid file for one attestation.
    #[test]
    fn issue11_high_s_twin_of_an_envelope_is_rejected() {
        let key = SigningKey::generate(KeyAlgorithm::EcdsaP256);
        let trusted = [key.public_key()];
        let envelope = Envelope::sign(IN_TOTO_PAYLOAD_TYPE, b"{}", &[&key]);
        let sig = decode_base64(&envelope.signatures[0].sig, "sig").expect("sig");
        let mut twin = envelope.clone();
        twin.signatures[0].sig = encode_base64(&crate::keys::tests::high_s_twin(&sig));
        assert!(envelope.verify(IN_TOTO_PAYLOAD_TYPE, &trusted, 1).is_ok());
        assert!(matches!(
            twin.verify(IN_TOTO_PAYLOAD_TYPE, &trusted, 1),
            Err(DsseError::Threshold { valid: 0, .. })
        ));
        assert!(twin
            .verify_allowing_high_s(IN_TOTO_PAYLOAD_TYPE, &trusted, 1)
            .is_ok());
    }

    /// Issue 11: envelopes over 16 MiB are refused before any JSON is parsed.
    #[test]
    fn issue11_oversized_envelope_is_refused_unparsed() {
        let big = vec![b' '; MAX_ENVELOPE_BYTES as usize + 1];
        assert_eq!(
            Envelope::from_json(&big),
            Err(DsseError::TooLarge {
                size: MAX_ENVELOPE_BYTES + 1,
                limit: MAX_ENVELOPE_BYTES
            })
        );
    }

    #[test]
    fn url_safe_unpadded_base64_is_accepted() {
        let key = SigningKey::generate(KeyAlgorithm::Ed25519);
        let mut env = Envelope::sign("t", b"\xfb\xff payload", &[&key]);
        env.payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b"\xfb\xff payload");
        let verified = env
            .verify("t", &[key.public_key()], 1)
            .expect("url-safe payload");
        assert_eq!(verified.payload(), b"\xfb\xff payload");
    }
}
