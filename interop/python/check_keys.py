"""Load trainprov key files with pyca/cryptography and recompute the keyid.

Usage: check_keys.py PRIVATE_PEM PUBLIC_PEM ALGORITHM MESSAGE_FILE SIG_FILE
  ALGORITHM: ecdsa-p256 | ed25519
  SIG_FILE:  a signature trainprov made over MESSAGE_FILE's bytes (DER ECDSA / raw Ed25519)

Checks, each fatal: the PKCS#8 private key loads (unencrypted) and is of ALGORITHM; the SPKI
public key loads and equals the private key's public half; the public PEM cryptography writes is
byte-identical to trainprov's file; trainprov's signature verifies. Prints
  keyid <sha256 hex of public_bytes(PEM, SubjectPublicKeyInfo)>
  python-sig <hex of a signature by the loaded private key over MESSAGE_FILE>
Exit status: 0 all checks passed, 1 a check failed (the reason is printed).
"""

import hashlib
import sys
import traceback


def fail(reason: str) -> int:
    print(f"failed: {reason}")
    return 1


def main() -> int:
    private_path, public_path, algorithm, message_path, sig_path = sys.argv[1:6]
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    with open(private_path, "rb") as f:
        private_pem = f.read()
    with open(public_path, "rb") as f:
        public_pem = f.read()
    with open(message_path, "rb") as f:
        message = f.read()
    with open(sig_path, "rb") as f:
        trainprov_sig = f.read()

    private = serialization.load_pem_private_key(private_pem, password=None)
    public = serialization.load_pem_public_key(public_pem)
    if algorithm == "ecdsa-p256":
        if not isinstance(private, ec.EllipticCurvePrivateKey) or private.curve.name != "secp256r1":
            return fail(f"private key is {type(private).__name__}, expected P-256")
        if not isinstance(public, ec.EllipticCurvePublicKey) or public.curve.name != "secp256r1":
            return fail(f"public key is {type(public).__name__}, expected P-256")
    elif algorithm == "ed25519":
        if not isinstance(private, ed25519.Ed25519PrivateKey):
            return fail(f"private key is {type(private).__name__}, expected Ed25519")
        if not isinstance(public, ed25519.Ed25519PublicKey):
            return fail(f"public key is {type(public).__name__}, expected Ed25519")
    else:
        return fail(f"unknown algorithm {algorithm}")

    spki = serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    derived_pem = private.public_key().public_bytes(*spki)
    loaded_pem = public.public_bytes(*spki)
    if derived_pem != loaded_pem:
        return fail("the .pub file is not the public half of the .key file")
    if loaded_pem != public_pem:
        return fail(f"cryptography writes a different PEM:\n{loaded_pem.decode()}\n"
                    f"trainprov wrote:\n{public_pem.decode()}")

    from cryptography.exceptions import InvalidSignature
    try:
        if algorithm == "ecdsa-p256":
            public.verify(trainprov_sig, message, ec.ECDSA(hashes.SHA256()))
            python_sig = private.sign(message, ec.ECDSA(hashes.SHA256()))
        else:
            public.verify(trainprov_sig, message)
            python_sig = private.sign(message)
    except InvalidSignature:
        return fail("cryptography rejects trainprov's signature")

    print("keyid", hashlib.sha256(loaded_pem).hexdigest())
    print("python-sig", python_sig.hex())
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SystemExit:
        raise
    except BaseException:
        traceback.print_exc(file=sys.stdout)
        sys.exit(1)
