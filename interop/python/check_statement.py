"""Validate an in-toto Statement v1 (and, optionally, its SLSA Provenance v1 predicate) with the
reference implementation, in-toto-attestation.

Usage: check_statement.py STATEMENT_JSON [--provenance]

The JSON is parsed strictly (unknown fields are errors) into the Statement protobuf, then
`in_toto_attestation.v1.statement.Statement.validate()` runs. The protobuf is turned back into a
dict and must equal the input, so no field was silently dropped or renamed. With --provenance the
predicate is also parsed strictly into the SLSA `Provenance` protobuf (timestamps must be
RFC 3339) and round-tripped the same way.
Exit status: 0 valid (prints "valid"), 1 invalid (the reason is printed).
"""

import json
import sys
import traceback


def main() -> int:
    path = sys.argv[1]
    provenance = "--provenance" in sys.argv[2:]
    from google.protobuf import json_format
    from in_toto_attestation.v1 import statement_pb2
    from in_toto_attestation.v1.statement import Statement

    with open(path, "rb") as f:
        text = f.read().decode("utf-8")
    original = json.loads(text)
    pb = json_format.Parse(text, statement_pb2.Statement())
    Statement.copy_from_pb(pb).validate()
    back = json_format.MessageToDict(pb)
    if back != original:
        print("failed: the Statement does not round-trip through the protobuf")
        print("ours:", json.dumps(original, sort_keys=True))
        print("back:", json.dumps(back, sort_keys=True))
        return 1
    if provenance:
        from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
        predicate = json.dumps(original["predicate"])
        ppb = json_format.Parse(predicate, provenance_pb2.Provenance())
        pback = json_format.MessageToDict(ppb)
        if pback != original["predicate"]:
            print("failed: the predicate does not round-trip through the Provenance protobuf")
            print("ours:", json.dumps(original["predicate"], sort_keys=True))
            print("back:", json.dumps(pback, sort_keys=True))
            return 1
    print("valid")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SystemExit:
        raise
    except BaseException:
        traceback.print_exc(file=sys.stdout)
        sys.exit(1)
