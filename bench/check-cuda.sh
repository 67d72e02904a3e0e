#!/usr/bin/env bash
# `just check-cuda`: proves that the trainer's `cuda` feature (candle's CUDA backend) compiles
# on this machine, which has neither a GPU nor a system CUDA toolkit.
#
# The toolkit comes from PyPI's NVIDIA wheels, installed into a venv: nvidia-cuda-nvcc (nvcc,
# ptxas, fatbinary, cudafe++), nvidia-nvvm (cicc, libdevice), nvidia-cuda-crt and
# nvidia-cuda-runtime (headers, libcudart) and nvidia-cuda-cccl (cub/thrust/libcu++ headers),
# all CUDA 13.0 (they install into one tree, site-packages/nvidia/cu13, laid out like a CUDA
# install). The cu12 wheels do not help: nvidia-cuda-nvcc-cu12 (12.8, 12.9) ships ptxas but
# no nvcc. CUDA 13.0 is the newest cudarc 0.19.10 knows that all these wheels exist for.
#
# Then, with a separate target directory so other builds are not disturbed:
#   cargo build -p trainprov-trainer --features cuda
# candle-kernels' build script (cudaforge) compiles candle's .cu kernels to PTX and a static
# MoE library with nvcc; cudarc's build script reads the version from `nvcc --version`
# (feature cuda-version-from-build-system, which candle enables). Building the library links
# nothing, so neither libcuda (the driver) nor cuBLAS/cuRAND/NVRTC are needed. A binary or test
# executable would link against them (`-lcuda -lcublas -lcublasLt -lcurand -lnvrtc -lcudart`,
# candle's cudarc features dynamic-linking), which needs a driver install or stub libraries.
#
# Environment:
#   CHECK_CUDA_VENV     venv for the wheels (default bench-data/cuda-venv)
#   CHECK_CUDA_VERSION  the wheels' CUDA version (default 13.0.*)
#   CHECK_CUDA_TARGET   cargo target dir (default bench-data/cuda-target)
#   CUDA_COMPUTE_CAP    GPU architecture to compile for (default 80; there is no nvidia-smi)
#   CHECK_CUDA_BINARY=0 skip `cargo check -p trainprov --features cuda`, the trainprov binary
#                       with the feature (checked, not linked: linking needs libcuda)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="${CHECK_CUDA_VENV:-$root/bench-data/cuda-venv}"
version="${CHECK_CUDA_VERSION:-13.0.*}"
target="${CHECK_CUDA_TARGET:-$root/bench-data/cuda-target}"
log() { printf 'check-cuda: %s\n' "$*" >&2; }
die() { printf 'check-cuda: error: %s\n' "$*" >&2; exit 1; }

# --- toolkit from PyPI ---------------------------------------------------------------------
site() { "$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }
if [[ ! -x "$venv/bin/python" ]]; then
  log "creating $venv"
  /usr/bin/python3 -m venv "$venv" || python3 -m venv "$venv"
fi
cuda="$(site)/nvidia/cu13"
if [[ ! -x "$cuda/bin/nvcc" || ! -x "$cuda/nvvm/bin/cicc" || ! -f "$cuda/include/cuda_runtime.h" ]]; then
  log "installing the CUDA $version toolkit wheels into $venv"
  "$venv/bin/pip" install -q "nvidia-cuda-nvcc==$version" "nvidia-nvvm==$version" \
    "nvidia-cuda-crt==$version" "nvidia-cuda-runtime==$version" "nvidia-cuda-cccl==$version" >&2 \
    || die "pip install of the NVIDIA wheels failed"
fi
[[ -x "$cuda/bin/nvcc" ]] || die "no nvcc in $cuda/bin after installing the wheels"

export CUDA_HOME="$cuda" CUDA_PATH="$cuda" CUDA_ROOT="$cuda" CUDA_TOOLKIT_ROOT_DIR="$cuda"
export NVCC="$cuda/bin/nvcc" PATH="$cuda/bin:$PATH"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-80}"
export CUDAFORGE_THREADS="${CUDAFORGE_THREADS:-$(nproc)}"
export CARGO_TARGET_DIR="$target"
log "nvcc: $("$NVCC" --version | tail -n 2 | head -n 1)"
log "g++ (nvcc's host compiler): $(g++ --version | head -n 1)"

# nvcc works at all: one kernel to PTX.
probe="$(mktemp -d)"
trap 'rm -rf "$probe"' EXIT
printf '__global__ void twice(float *x) { x[threadIdx.x] *= 2.0f; }\n' >"$probe/k.cu"
"$NVCC" --ptx -arch="sm_$CUDA_COMPUTE_CAP" "$probe/k.cu" -o "$probe/k.ptx" || die "nvcc cannot compile a kernel"
log "nvcc compiles a kernel to PTX for sm_$CUDA_COMPUTE_CAP"

# --- the feature -----------------------------------------------------------------------------
mkdir -p "$target"
build_log="$target/check-cuda.log"
log "cargo build -p trainprov-trainer --features cuda (target dir ${target#"$root"/}; log ${build_log#"$root"/})"
start=$(date +%s)
if cargo build -p trainprov-trainer --features cuda >"$build_log" 2>&1; then
  log "OK: trainprov-trainer with --features cuda compiled in $(($(date +%s) - start)) s (library; nothing linked against CUDA)"
  grep -E "^\s+(Compiling|Finished) (cudarc|candle-kernels|candle-core|candle-nn|trainprov-trainer|\`)" "$build_log" >&2 || true
  status=0
else
  status=$?
  log "FAILED after $(($(date +%s) - start)) s; the first errors:"
  grep -n -m 20 -E "^(error|warning: .*panicked)|panicked at|error:|nvcc fatal" "$build_log" >&2 || tail -n 30 "$build_log" >&2
fi

if [[ "${CHECK_CUDA_BINARY:-1}" == 1 ]]; then
  bin_log="$target/check-cuda-binary.log"
  log "cargo check -p trainprov --features cuda (the CLI with the feature; log ${bin_log#"$root"/})"
  if cargo check -p trainprov --features cuda >"$bin_log" 2>&1; then
    log "OK: the trainprov binary checks with the cuda feature"
  else
    log "the trainprov binary does not check with the cuda feature:"
    grep -m 5 -E "panicked|error" "$bin_log" >&2 || tail -n 20 "$bin_log" >&2
    status=1
  fi
fi
exit "$status"
