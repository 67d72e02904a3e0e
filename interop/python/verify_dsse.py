"""Verify a DSSE envelope with securesystemslib (the reference DSSE implementation).

Usage:
  verify_dsse.py ENVELOPE [--bundle] [--threshold N] --key PEM KEYTYPE SCHEME KEYID [--key ...]

ENVELOPE is a DSSE envelope JSON file or, with --bundle, a Sigstore bundle (model.sig) whose
`dsseEnvelope` field is verified. Each --key names an SPKI PEM public key, the keytype and scheme
securesystemslib must derive/use for it, and the keyid to give it (the keyid the signatures name).

Exit status: 0 verified (prints "verified" and the sha256 of the payload), 1 rejected by
securesystemslib (prints the reason), 3 any other failure (bad input, wrong keytype, import error):
a test expecting a rejection must see 1, never 3.
"""

import argparse
import hashlib
import json
import sys
import traceback


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("envelope")
    parser.add_argument("--bundle", action="store_true")
    parser.add_argument("--threshold", type=int, default=1)
    parser.add_argument("--key", nargs=4, action="append", required=True,
                        metavar=("PEM", "KEYTYPE", "SCHEME", "KEYID"))
    args = parser.parse_args()

    from cryptography.hazmat.primitives import serialization
    from securesystemslib import exceptions
    from securesystemslib.dsse import Envelope
    from securesystemslib.signer import SSlibKey

    keys = []
    for pem_path, keytype, scheme, keyid in args.key:
        with open(pem_path, "rb") as f:
            public = serialization.load_pem_public_key(f.read())
        key = SSlibKey.from_crypto(public, keyid=keyid, scheme=scheme)
        if key.keytype != keytype:
            print(f"error: securesystemslib derives keytype {key.keytype!r} for {pem_path}, "
                  f"trainprov says {keytype!r}")
            return 3
        keys.append(key)

    with open(args.envelope, "rb") as f:
        document = json.load(f)
    if args.bundle:
        document = document["dsseEnvelope"]
    envelope = Envelope.from_dict(document)

    try:
        accepted = envelope.verify(keys, args.threshold)
    except exceptions.UnverifiedSignatureError as e:  # VerificationError is a subclass
        print(f"rejected: {type(e).__name__}: {e}")
        return 1
    print("verified")
    print("payloadType", envelope.payload_type)
    print("payload-sha256", hashlib.sha256(envelope.payload).hexdigest())
    print("accepted-keyids", " ".join(sorted(accepted)))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SystemExit:
        raise
    except BaseException:  # anything but a verification verdict is a harness failure
        traceback.print_exc(file=sys.stdout)
        sys.exit(3)
