#!/usr/bin/env bash
# Creates (once) the Python venv holding the independent verifiers trainprov is tested against:
# securesystemslib (DSSE), model-signing (OpenSSF Model Signing) and in-toto-attestation, and the
# AI-BOM validators cyclonedx-python-lib (CycloneDX 1.6 JSON schema) and spdx-python-model (SPDX 3.0.1).
# Usage: scripts/python-venv.sh [VENV_DIR]   (default: .venv at the repository root)
# Prints the venv's python path on stdout. Safe to run concurrently (flock) and repeatedly
# (a stamp file records the pinned requirements it was built from).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${1:-${TRAINPROV_VENV:-$root/.venv}}"
requirements="model-signing==1.1.1 securesystemslib==1.6.0 in-toto-attestation==0.9.3 pyopenssl==26.4.0 cryptography==50.0.2 cyclonedx-python-lib[json-validation]==11.12.0 spdx-python-model==0.0.6"
stamp="$venv/.trainprov-requirements"
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$requirements" ]]; then
  echo "$venv/bin/python"
  exit 0
fi
python="${PYTHON:-python3}"
command -v "$python" >/dev/null || { echo "python-venv.sh: $python not found; install Python 3.10+" >&2; exit 2; }
echo "python-venv.sh: creating $venv with: $requirements" >&2
rm -rf "$venv"
"$python" -m venv "$venv"
set -f  # "[json-validation]" is an extra, not a glob
"$venv/bin/pip" install --quiet --disable-pip-version-check $requirements >&2
set +f
echo "$requirements" > "$stamp"
echo "$venv/bin/python"
