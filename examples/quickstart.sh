#!/usr/bin/env bash
# trainprov's main job on the embedded example, start to finish:
#   make a key pair, sign the example model (OpenSSF model signature), attest its files
#   (DSSE + in-toto + SLSA provenance), verify both, then show that a one-byte change is caught.
# Works in a scratch directory (WORK=... to choose it); the repository is not modified.
# Usage: bash examples/quickstart.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

echo "==> building trainprov (release)" >&2
cargo build --release --quiet --bin trainprov
trainprov="$root/target/release/trainprov"

work="${WORK:-$(mktemp -d -t trainprov-quickstart.XXXXXX)}"
mkdir -p "$work"
rm -rf "$work/model" "$work/keys"
cp -r examples/tiny-model/model "$work/model"
cd "$work"

step() {
  echo
  echo "\$ trainprov $*"
  "$trainprov" "$@"
}

step keygen --out keys/signer
step sign-model model --key keys/signer.key
step verify model/model.sig --key keys/signer.pub
step attest model --key keys/signer.key --out provenance.intoto.json --base model
step verify provenance.intoto.json --key keys/signer.pub --model-dir model --artifact model/model.safetensors

venv="${TRAINPROV_VENV:-$root/.venv}"
if [[ -x "$venv/bin/model_signing" ]]; then
  echo
  echo "==> independent check with OpenSSF model_signing (from $venv)"
  echo "\$ model_signing verify key model --signature model/model.sig --public_key keys/signer.pub"
  "$venv/bin/model_signing" verify key model --signature model/model.sig --public_key keys/signer.pub
fi

echo
echo "==> tampering: flipping one byte of model/model.safetensors; verify must now fail (exit 1)"
python3 - <<'PY'
with open("model/model.safetensors", "r+b") as f:
    f.seek(4096)
    b = f.read(1)
    f.seek(4096)
    f.write(bytes([b[0] ^ 1]))
PY
set +e
"$trainprov" verify model/model.sig --key keys/signer.pub
code=$?
set -e
if [[ $code -ne 1 ]]; then
  echo "quickstart: expected exit 1 for the tampered model, got $code" >&2
  exit 1
fi
echo
echo "quickstart: OK. The tampered file was caught (exit $code). Files are in $work"
