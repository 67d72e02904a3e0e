//! Approvals: SLSA Verification Summary Attestations (VSA v1) that an approver key signs to say
//! "this attestation met this policy, and may go to this environment".
//!
//! An approval is a DSSE envelope around an in-toto Statement v1 whose predicateType is
//! [`VERIFICATION_SUMMARY_V1`] and whose subjects are the approved attestation's subjects. The
//! predicate follows <https://slsa.dev/spec/v1.0/verification_summary> and adds three fields of
//! trainprov's own (`environment`, `approverKeyid`, `note`):
//!
//! ```json
//! {
//!   "verifier": {"id": "https://trainprov.dev/approver/3f1c…", "version": {"trainprov": "0.1.0"}},
//!   "timeVerified": "2026-05-01T12:00:00Z",
//!   "resourceUri": "file:///work/runs/adapter-v2",
//!   "policy": {"uri": "file:///work/policy.toml", "digest": {"sha256": "9b2e…"}},
//!   "inputAttestations": [{"uri": "file:///work/runs/adapter-v2/provenance.intoto.json",
//!                          "digest": {"sha256": "c0de…"}}],
//!   "verificationResult": "PASSED",
//!   "verifiedLevels": ["SLSA_BUILD_LEVEL_1"],
//!   "slsaVersion": "1.0",
//!   "environment": "prod",
//!   "approverKeyid": "3f1c…",
//!   "note": "signed off after the eval review"
//! }
//! ```
//!
//! `verifiedLevels` is `SLSA_BUILD_LEVEL_1`: the provenance exists and is signed, but by keys on
//! the machine that trained, not by a hardened build platform (Build L2 and up).
//!
//! [`check_approval`] decides whether an approval counts for one attestation and environment:
//! signed by one of the environment's approver keys, a VSA that PASSED, for that environment,
//! naming exactly the attestation's subjects and the attestation file's SHA-256 among its
//! `inputAttestations`, with `verifier.id` naming the key that signed.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::dsse::{Envelope, IN_TOTO_PAYLOAD_TYPE};
use crate::keys::PublicKey;
use crate::statement::{DigestSet, ResourceDescriptor, Statement};
use crate::{StatementError, Verified};

/// predicateType of SLSA Verification Summary Attestations v1.
pub const VERIFICATION_SUMMARY_V1: &str = "https://slsa.dev/verification_summary/v1";
/// `verifier.id` is this followed by the approver's keyid.
pub const APPROVER_ID_PREFIX: &str = "https://trainprov.dev/approver/";
/// The only result trainprov writes.
pub const PASSED: &str = "PASSED";

/// `verifier.id` of an approval signed by the key with this keyid.
pub fn approver_id(keyid: &str) -> String {
    format!("{APPROVER_ID_PREFIX}{keyid}")
}

/// The VSA predicate (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerificationSummary {
    /// Who verified: the approver key.
    pub verifier: Verifier,
    /// When (RFC 3339 UTC).
    pub time_verified: String,
    /// The artifact verified (its directory).
    pub resource_uri: String,
    /// The policy it was checked against.
    pub policy: ResourceRef,
    /// The attestation(s) it was checked from.
    pub input_attestations: Vec<ResourceRef>,
    /// `PASSED` or `FAILED`.
    pub verification_result: String,
    /// SLSA levels verified.
    pub verified_levels: Vec<String>,
    /// SLSA version of the levels.
    pub slsa_version: String,
    /// The deploy environment approved (trainprov field).
    pub environment: String,
    /// keyid of the approver key (trainprov field).
    pub approver_keyid: String,
    /// Free text from the approver (trainprov field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// `verifier`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verifier {
    /// [`approver_id`] of the key.
    pub id: String,
    /// Component versions.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub version: BTreeMap<String, String>,
}

/// A URI with digests (`policy`, `inputAttestations[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceRef {
    /// Where it was.
    pub uri: String,
    /// Its digests.
    pub digest: DigestSet,
}

/// What an approval must match.
#[derive(Debug, Clone, Copy)]
pub struct ApprovalContext<'a> {
    /// The environment being deployed to.
    pub environment: &'a str,
    /// SHA-256 of the attestation file (lowercase hex).
    pub attestation_sha256: &'a str,
    /// The attestation's subjects.
    pub subjects: &'a [ResourceDescriptor],
    /// When set, the approval counts only if it was made under this exact policy (its
    /// `policy.digest.sha256`; lowercase hex).
    pub policy_sha256: Option<&'a str>,
}

/// Why an approval does not count.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApprovalError {
    /// No approver key of the environment signed it.
    #[error("not signed by an approver key for '{environment}' (its signature names keyid {claimed}): {detail}")]
    Untrusted {
        /// The environment.
        environment: String,
        /// The keyids the envelope claims (unauthenticated hints).
        claimed: String,
        /// The signature check's message.
        detail: String,
    },
    /// Not a VSA Statement.
    #[error(transparent)]
    Statement(#[from] StatementError),
    /// For another environment.
    #[error("approves environment '{got}', not '{expected}'")]
    Environment {
        /// Wanted.
        expected: String,
        /// In the approval.
        got: String,
    },
    /// The result is not PASSED.
    #[error("verificationResult is '{got}', not PASSED")]
    Result {
        /// In the approval.
        got: String,
    },
    /// `verifier.id` names another key than the one that signed.
    #[error("verifier.id '{id}' does not name the key that signed it ({keyid})")]
    Verifier {
        /// `verifier.id`.
        id: String,
        /// The signing key.
        keyid: String,
    },
    /// Its subjects are not the attestation's.
    #[error("its subjects are not this attestation's subjects ({detail})")]
    Subjects {
        /// The first difference.
        detail: String,
    },
    /// It was made under another version of the policy (when that is required).
    #[error("it was checked against another version of the policy (sha256 {got}, this one is {expected})")]
    Policy {
        /// This policy's sha256.
        expected: String,
        /// The approval's policy sha256.
        got: String,
    },
    /// It does not name this attestation file.
    #[error("it approves another attestation (inputAttestations has no sha256 {expected})")]
    InputAttestation {
        /// SHA-256 of this attestation file.
        expected: String,
    },
}

/// Checks an approval envelope against the approver keys of `context.environment` and the
/// attestation it must name (see the module docs).
pub fn check_approval(
    envelope: &Envelope,
    approvers: &[PublicKey],
    context: &ApprovalContext<'_>,
) -> Result<Verified<Statement<VerificationSummary>>, ApprovalError> {
    let payload = envelope
        .verify(IN_TOTO_PAYLOAD_TYPE, approvers, 1)
        .map_err(|e| ApprovalError::Untrusted {
            environment: context.environment.to_string(),
            claimed: envelope
                .signatures
                .iter()
                .map(|s| {
                    if s.keyid.is_empty() {
                        "(none)"
                    } else {
                        s.keyid.as_str()
                    }
                })
                .collect::<Vec<_>>()
                .join(", "),
            detail: e.to_string(),
        })?;
    let statement =
        Statement::<VerificationSummary>::from_verified(payload, Some(VERIFICATION_SUMMARY_V1))?;
    let summary = &statement.predicate;
    if summary.environment != context.environment {
        return Err(ApprovalError::Environment {
            expected: context.environment.to_string(),
            got: summary.environment.clone(),
        });
    }
    if summary.verification_result != PASSED {
        return Err(ApprovalError::Result {
            got: summary.verification_result.clone(),
        });
    }
    if !statement
        .signed_by()
        .iter()
        .any(|k| summary.verifier.id == approver_id(k) && summary.approver_keyid == *k)
    {
        return Err(ApprovalError::Verifier {
            id: summary.verifier.id.clone(),
            keyid: statement.signed_by().join(", "),
        });
    }
    let named = |list: &[ResourceDescriptor]| -> BTreeSet<(Option<String>, DigestSet)> {
        list.iter()
            .map(|s| (s.name.clone(), s.digest.clone()))
            .collect()
    };
    let ours = named(context.subjects);
    let theirs = named(&statement.subject);
    if ours != theirs {
        let detail = match ours.difference(&theirs).next() {
            Some((name, _)) => format!(
                "'{}' is missing or has other digests",
                name.clone().unwrap_or_default()
            ),
            None => format!("{} subject(s) instead of {}", theirs.len(), ours.len()),
        };
        return Err(ApprovalError::Subjects { detail });
    }
    if !summary.input_attestations.iter().any(|a| {
        a.digest
            .get("sha256")
            .is_some_and(|d| d.eq_ignore_ascii_case(context.attestation_sha256))
    }) {
        return Err(ApprovalError::InputAttestation {
            expected: context.attestation_sha256.to_string(),
        });
    }
    if let Some(expected) = context.policy_sha256 {
        let got = summary
            .policy
            .digest
            .get("sha256")
            .cloned()
            .unwrap_or_default();
        if !got.eq_ignore_ascii_case(expected) {
            return Err(ApprovalError::Policy {
                expected: expected.to_string(),
                got,
            });
        }
    }
    Ok(statement)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{KeyAlgorithm, SigningKey};
    use crate::statement::digest_set_of;

    fn approval(key: &SigningKey, environment: &str, attestation: &str) -> Envelope {
        approval_with(key, environment, attestation, |_| {})
    }

    fn approval_with(
        key: &SigningKey,
        environment: &str,
        attestation: &str,
        change: impl FnOnce(&mut VerificationSummary),
    ) -> Envelope {
        let keyid = key.public_key().keyid().to_string();
        let summary = VerificationSummary {
            verifier: Verifier {
                id: approver_id(&keyid),
                version: BTreeMap::new(),
            },
            time_verified: "2026-01-01T00:00:00Z".into(),
            resource_uri: "file:///out".into(),
            policy: ResourceRef {
                uri: "file:///policy.toml".into(),
                digest: digest_set_of(b"policy"),
            },
            input_attestations: vec![ResourceRef {
                uri: "file:///out/provenance.intoto.json".into(),
                digest: digest_set_of(attestation.as_bytes()),
            }],
            verification_result: PASSED.into(),
            verified_levels: vec!["SLSA_BUILD_LEVEL_1".into()],
            slsa_version: "1.0".into(),
            environment: environment.into(),
            approver_keyid: keyid,
            note: None,
        };
        let mut summary = summary;
        change(&mut summary);
        let statement = Statement::new(subjects(), VERIFICATION_SUMMARY_V1, summary);
        Envelope::sign(
            IN_TOTO_PAYLOAD_TYPE,
            &statement.to_json().expect("json"),
            &[key],
        )
    }

    /// Checking for `prod`, of the attestation with this SHA-256 and these subjects.
    fn prod_context<'a>(sha: &'a str, subjects: &'a [ResourceDescriptor]) -> ApprovalContext<'a> {
        ApprovalContext {
            environment: "prod",
            attestation_sha256: sha,
            subjects,
            policy_sha256: None,
        }
    }

    fn subjects() -> Vec<ResourceDescriptor> {
        vec![ResourceDescriptor::named(
            "adapter.safetensors",
            digest_set_of(b"w"),
        )]
    }

    #[test]
    fn approval_counts_only_for_its_key_environment_and_attestation() {
        let approver = SigningKey::generate(KeyAlgorithm::EcdsaP256);
        let stranger = SigningKey::generate(KeyAlgorithm::Ed25519);
        let subjects = subjects();
        let sha = digest_set_of(b"att")["sha256"].clone();
        let context = prod_context(&sha, &subjects);
        let keys = [approver.public_key()];
        let good =
            check_approval(&approval(&approver, "prod", "att"), &keys, &context).expect("counts");
        assert_eq!(good.predicate.environment, "prod");
        assert!(matches!(
            check_approval(&approval(&stranger, "prod", "att"), &keys, &context),
            Err(ApprovalError::Untrusted { .. })
        ));
        assert!(matches!(
            check_approval(&approval(&approver, "staging", "att"), &keys, &context),
            Err(ApprovalError::Environment { .. })
        ));
        assert!(matches!(
            check_approval(&approval(&approver, "prod", "other"), &keys, &context),
            Err(ApprovalError::InputAttestation { .. })
        ));
        let other_subjects = vec![ResourceDescriptor::named("x", digest_set_of(b"y"))];
        let other = ApprovalContext {
            subjects: &other_subjects,
            ..context
        };
        assert!(matches!(
            check_approval(&approval(&approver, "prod", "att"), &keys, &other),
            Err(ApprovalError::Subjects { .. })
        ));
    }

    /// Each single change an approver did not sign, or signed with other content, is caught:
    /// a FAILED result, a verifier or approver keyid naming another key, and any edit of the
    /// signed payload (here, the environment rewritten without re-signing).
    #[test]
    fn each_single_change_to_an_approval_is_caught() {
        let approver = SigningKey::generate(KeyAlgorithm::EcdsaP256);
        let subjects = subjects();
        let sha = digest_set_of(b"att")["sha256"].clone();
        let context = prod_context(&sha, &subjects);
        let keys = [approver.public_key()];
        let failed = approval_with(&approver, "prod", "att", |s| {
            s.verification_result = "FAILED".into()
        });
        assert!(matches!(
            check_approval(&failed, &keys, &context),
            Err(ApprovalError::Result { .. })
        ));
        let other_verifier = approval_with(&approver, "prod", "att", |s| {
            s.verifier.id = approver_id("someone-else")
        });
        assert!(matches!(
            check_approval(&other_verifier, &keys, &context),
            Err(ApprovalError::Verifier { .. })
        ));
        let other_keyid = approval_with(&approver, "prod", "att", |s| {
            s.approver_keyid = "someone-else".into()
        });
        assert!(matches!(
            check_approval(&other_keyid, &keys, &context),
            Err(ApprovalError::Verifier { .. })
        ));
        let mut edited = approval(&approver, "staging", "att");
        let payload = crate::dsse::decode_base64(&edited.payload, "payload").expect("payload");
        let text = String::from_utf8(payload).expect("utf-8");
        assert!(text.contains("\"environment\":\"staging\""), "{text}");
        edited.payload = crate::dsse::encode_base64(
            text.replace("\"environment\":\"staging\"", "\"environment\":\"prod\"")
                .as_bytes(),
        );
        assert!(matches!(
            check_approval(&edited, &keys, &context),
            Err(ApprovalError::Untrusted { .. })
        ));
        // With `same_policy`, an approval made under another policy version does not count.
        let this_policy = digest_set_of(b"policy v2")["sha256"].clone();
        let pinned = ApprovalContext {
            policy_sha256: Some(&this_policy),
            ..context
        };
        assert!(matches!(
            check_approval(&approval(&approver, "prod", "att"), &keys, &pinned),
            Err(ApprovalError::Policy { .. })
        ));
        let under_v2 = approval_with(&approver, "prod", "att", |s| {
            s.policy.digest = digest_set_of(b"policy v2")
        });
        check_approval(&under_v2, &keys, &pinned).expect("made under this policy");
    }
}
