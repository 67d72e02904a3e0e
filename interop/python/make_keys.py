"""Write keys made by pyca/cryptography, for trainprov to load.

Usage: make_keys.py OUTDIR
Writes NAME.key / NAME.pub for
  ec-pkcs8     P-256, PKCS#8 (what `openssl genpkey` and most tools write)
  ec-sec1      P-256, "BEGIN EC PRIVATE KEY" (TraditionalOpenSSL / SEC1, `openssl ecparam -genkey`)
  ed25519      Ed25519, PKCS#8
and prints one line per key: "NAME <sha256 hex of the SPKI PEM>" (the keyid trainprov must compute).
"""

import hashlib
import os
import sys

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519


def main() -> int:
    out = sys.argv[1]
    keys = [
        ("ec-pkcs8", ec.generate_private_key(ec.SECP256R1()), serialization.PrivateFormat.PKCS8),
        ("ec-sec1", ec.generate_private_key(ec.SECP256R1()),
         serialization.PrivateFormat.TraditionalOpenSSL),
        ("ed25519", ed25519.Ed25519PrivateKey.generate(), serialization.PrivateFormat.PKCS8),
    ]
    for name, key, fmt in keys:
        private = key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())
        public = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        with open(os.path.join(out, f"{name}.key"), "wb") as f:
            f.write(private)
        with open(os.path.join(out, f"{name}.pub"), "wb") as f:
            f.write(public)
        print(name, hashlib.sha256(public).hexdigest())
    return 0


if __name__ == "__main__":
    sys.exit(main())
