"""Validate an in-toto Statement v1 (and, optionally, its SLSA Provenance v1 predicate) with the
reference implementation, in-toto-attestation.

Usage: check_statement.py STATEMENT_JSON [--provenance | --vsa]

The JSON is parsed strictly (unknown fields are errors) into the Statement protobuf, then
`in_toto_attestation.v1.statement.Statement.validate()` runs. The protobuf is turned back into a
dict and must equal the input, so no field was silently dropped or renamed. With --provenance the
predicate is also parsed strictly into the SLSA `Provenance` protobuf (timestamps must be
RFC 3339) and round-tripped the same way. With --vsa the predicate is parsed into the SLSA
Verification Summary v1 protobuf. That protobuf (0.9.3) still declares `verifiedLevels` as one
string where the specification (slsa.dev/spec/v1.0/verification_summary) requires a list of
strings (in-toto/attestation#425, fixed by #429), and has no `verifier.version`; those two are
checked here by hand, against the specification, and every other field strictly and
round-tripped. Extra predicate fields (trainprov's `environment`, `approverKeyid`, `note`) are
allowed by the in-toto framework and are reported, not refused.
Exit status: 0 valid (prints "valid"), 1 invalid (the reason is printed).
"""

import json
import sys
import traceback


def round_trip(document: dict, message, what: str):
    """Parses `document` strictly into the protobuf `message`; returns the message, or None
    (after saying why) when turning it back into a dict does not give `document` again."""
    from google.protobuf import json_format

    pb = json_format.Parse(json.dumps(document), message)
    back = json_format.MessageToDict(pb)
    if back != document:
        print(f"failed: the {what} does not round-trip through the protobuf")
        print("ours:", json.dumps(document, sort_keys=True))
        print("back:", json.dumps(back, sort_keys=True))
        return None
    return pb


def main() -> int:
    path = sys.argv[1]
    provenance = "--provenance" in sys.argv[2:]
    from in_toto_attestation.v1 import statement_pb2
    from in_toto_attestation.v1.statement import Statement

    with open(path, "rb") as f:
        original = json.loads(f.read().decode("utf-8"))
    pb = round_trip(original, statement_pb2.Statement(), "Statement")
    if pb is None:
        return 1
    Statement.copy_from_pb(pb).validate()
    if "--vsa" in sys.argv[2:]:
        return check_vsa(original["predicate"])
    if provenance:
        from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
        if round_trip(original["predicate"], provenance_pb2.Provenance(), "Provenance predicate") is None:
            return 1
    print("valid")
    return 0


def check_vsa(predicate: dict) -> int:
    from in_toto_attestation.predicates.vsa.v1 import vsa_pb2

    known = dict(predicate)
    levels = known.pop("verifiedLevels", [])
    if not isinstance(levels, list) or not all(isinstance(l, str) and l for l in levels):
        print("failed: verifiedLevels must be a list of non-empty strings")
        return 1
    verifier = dict(known.get("verifier", {}))
    version = verifier.pop("version", {})
    if not isinstance(version, dict) or not all(isinstance(v, str) for v in version.values()):
        print("failed: verifier.version must map component names to version strings")
        return 1
    known["verifier"] = verifier
    field_names = {f.json_name for f in vsa_pb2.VerificationSummary.DESCRIPTOR.fields}
    extra = sorted(k for k in known if k not in field_names)
    for k in extra:
        known.pop(k)
    if round_trip(known, vsa_pb2.VerificationSummary(), "VerificationSummary predicate") is None:
        return 1
    back = known
    for required in ("verifier", "timeVerified", "resourceUri", "policy", "verificationResult"):
        if required not in back:
            print(f"failed: the VSA predicate has no {required}")
            return 1
    if back["verificationResult"] not in ("PASSED", "FAILED"):
        print("failed: verificationResult must be PASSED or FAILED")
        return 1
    print("valid" + (f" (extension fields: {', '.join(extra)})" if extra else ""))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SystemExit:
        raise
    except BaseException:
        traceback.print_exc(file=sys.stdout)
        sys.exit(1)
