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
bench: bench-sign bench-snapshot

# trainprov sign-model/verify vs model_signing sign/verify key on a 1 GiB model directory.
bench-sign:
    bash bench/bench-sign.sh

# trainprov snapshot (--rehash and warm cache) vs b3sum, sha256sum, md5sum and DVC on 1 GiB.
bench-snapshot:
    bash bench/bench-snapshot.sh

# What CI runs.
ci:
    bash .ci/run
