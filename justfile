# Convenience recipes; each is a plain cargo/bash command that works without just.

# The main job on the embedded example (keygen, sign, verify, tamper check).
demo:
    bash examples/quickstart.sh

# Every test, including the interop checks against model_signing and securesystemslib.
test:
    cargo test --workspace

# Formatting and lints exactly as CI runs them.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings

# All benchmarks; results go into BENCHMARKS.md.
bench: bench-sign bench-snapshot bench-train

# trainprov sign-model/verify vs model_signing sign/verify key on a 1 GiB model directory.
bench-sign:
    bash bench/bench-sign.sh

# trainprov snapshot (--rehash and warm cache) vs b3sum, sha256sum, md5sum and DVC on 1 GiB.
bench-snapshot:
    bash bench/bench-snapshot.sh

# trainprov train vs PyTorch + PEFT (steps/s, tokens/s, peak RSS) on four configs (up to 0.5B-class), plus eval with/without adapter.
bench-train:
    bash bench/bench-train.sh

# Proves the trainer's `cuda` feature compiles here (nvcc from PyPI's NVIDIA wheels; no GPU needed).
check-cuda:
    bash bench/check-cuda.sh

# PEFT loads an adapter trained by trainprov and computes the same loss.
check-peft:
    bench-data/peft-venv/bin/python bench/check_peft_load.py

# What CI runs.
ci:
    bash .ci/run
