#!/usr/bin/env bash
# Creates (once) the Python venv holding the real ML stack trainprov is checked against and wraps:
# Debian's CPU PyTorch (package python3-torch, seen through --system-site-packages) with
# transformers, accelerate and PEFT from PyPI at pinned versions. Used by the PEFT-load and
# transformers-parity tests, the wrapped PEFT example (examples/wrap-peft) and the fixture
# generators.
# Usage: scripts/torch-venv.sh [VENV_DIR]   (default: $TRAINPROV_TORCH_VENV, else .venv-torch at
# the repository root). Prints the venv's python path on stdout.
# Installs python3-torch with apt-get when it is missing and this runs as root; otherwise it fails
# naming the package to install. Safe to run concurrently (flock) and repeatedly (a stamp file
# records the pinned requirements it was built from).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${1:-${TRAINPROV_TORCH_VENV:-$root/.venv-torch}}"
requirements="transformers==4.38.2 accelerate==0.28.0 peft==0.10.0"
# Debian's torch calls itself 1.13.0a0, which pip ranks below peft's "torch>=1.13.0": peft is
# installed without dependencies (its others come with transformers and accelerate), or pip would
# download a multi-GiB CUDA torch from PyPI over the Debian one.
with_deps="transformers==4.38.2 accelerate==0.28.0"
no_deps="peft==0.10.0"
stamp="$venv/.trainprov-requirements"
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$requirements" ]]; then
  echo "$venv/bin/python"
  exit 0
fi
# Debian's torch is built for Debian's interpreter, not for whatever python3 is first on PATH.
python=/usr/bin/python3
if ! "$python" -c 'import torch' >/dev/null 2>&1; then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    echo "torch-venv.sh: installing Debian's python3-torch (CPU PyTorch) with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends python3-torch python3-venv libopenblas0-pthread >&2
  else
    echo "torch-venv.sh: $python cannot import torch; install Debian's python3-torch and python3-venv (apt-get install python3-torch python3-venv) and run again" >&2
    exit 2
  fi
fi
"$python" -c 'import torch' >/dev/null || { echo "torch-venv.sh: $python still cannot import torch after installing python3-torch" >&2; exit 2; }
echo "torch-venv.sh: creating $venv with Debian's torch and: $requirements" >&2
rm -rf "$venv"
"$python" -m venv --system-site-packages "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check $with_deps >&2
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps $no_deps >&2
"$venv/bin/python" -c 'import torch, transformers, peft; assert torch.__version__.startswith("1.13"), torch.__file__' >&2 \
  || { echo "torch-venv.sh: the venv does not use Debian's torch 1.13" >&2; exit 2; }
echo "$requirements" > "$stamp"
echo "$venv/bin/python"
