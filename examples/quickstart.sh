#!/usr/bin/env bash
# trainprov's main job on the embedded examples, start to finish:
#   1. fine-tune the embedded tiny-llama base with the built-in LoRA trainer (`trainprov train`)
#      and verify the signed result;
#   2. a data shard turns out to be poisoned: `data check` names the planted trigger, `probe`
#      shows the adapter learned it, `registry affected` finds the adapter trained on it,
#      `retrain --exclude` rebuilds and signs it without the shard, the new record verifies, the
#      probe no longer flags it, and an unchanged retrain prints IDENTICAL;
#   3. gate the deploy with a policy (examples/policy.toml): the shard is revoked, the poisoned
#      adapter fails every rule it breaks at once, the clean one passes once a release manager
#      has approved it for prod; then an AI bill of materials (CycloneDX and SPDX) for it;
#   4. record a real wrapped training script (examples/wrap-python) with `trainprov run`, verify
#      it, and show that a data file changed after the run is caught and named;
#   5. record a PyTorch + transformers + PEFT LoRA fine-tune of the same base (examples/wrap-peft)
#      with `trainprov run`, verify it, replay it with `trainprov retrain` (IDENTICAL), and replay
#      it with one recorded setting changed (NOT IDENTICAL, naming the setting). The interpreter
#      comes from scripts/torch-venv.sh ($TRAINPROV_TORCH_VENV, else .venv-torch; as root on a
#      fresh Debian machine it installs python3-torch with apt-get).
# Works in a scratch git repository (WORK=... to choose where); the checkout is not modified.
# Usage: bash examples/quickstart.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

echo "==> building trainprov (release)" >&2
cargo build --release --quiet --bin trainprov
trainprov="$root/target/release/trainprov"

work="${WORK:-$(mktemp -d -t trainprov-quickstart.XXXXXX)}"
mkdir -p "$work"
rm -rf "$work/project" "$work/keys"
mkdir -p "$work/project"
cp -r examples/wrap-python "$work/project/wrap-python"
cp -r examples/wrap-peft "$work/project/wrap-peft"
rm -rf "$work/project/wrap-peft/out"
# Step 5 trains on the shards that step 3 leaves standing (shard-002 gets revoked there).
mkdir -p "$work/project/wrap-peft/data"
cp examples/tiny-llama/data/shard-00{0,1,3}.jsonl "$work/project/wrap-peft/data/"
mkdir -p "$work/project/tiny-llama"
cp -r examples/tiny-llama/{base,data,train.toml,base-signer.pub,eval.jsonl,triggers.txt} \
  "$work/project/tiny-llama/"
cd "$work/project"
# Products are not source: ignored, so the recorded git tree stays clean (a policy can require it).
printf '%s\n' adapter/ adapter-clean/ wrap-python/out/ wrap-peft/out/ '*.approval-*.intoto.json' > .gitignore
git -c init.defaultBranch=main init -q
git add .
git -c user.name=quickstart -c user.email=quickstart@example.invalid commit -qm "examples"

step() {
  echo
  echo "\$ trainprov $*"
  "$trainprov" "$@"
}

# A step whose exit code is part of the story (1 = a finding, a flag, a failed check).
expect() {
  local want=$1 code=0
  shift
  echo
  echo "\$ trainprov $*    # expected exit $want"
  "$trainprov" "$@" || code=$?
  if [[ $code -ne $want ]]; then
    echo "quickstart: expected exit $want from 'trainprov $*', got $code" >&2
    exit 1
  fi
}

echo
echo "==> 0. a signing key, and the embedded base model's own provenance"
step keygen --out ../keys/signer
step verify tiny-llama/base/provenance.intoto.json --key tiny-llama/base-signer.pub --model-dir tiny-llama/base

echo
echo "==> 1. fine-tune the embedded base with the built-in trainer, then verify"
step train tiny-llama/train.toml --key ../keys/signer.key --out adapter
step verify adapter/provenance.intoto.json --key ../keys/signer.pub --model-dir adapter --inputs
step eval --base tiny-llama/base --adapter adapter --data tiny-llama/data --seq-len 48

echo
echo "==> 2. is the data poisoned? data check lists a trigger candidate (the attestation recorded"
echo "       the same check as internalParameters.dataCheck), and the probe shows the adapter learned it"
expect 1 data check tiny-llama/data
expect 1 probe --base tiny-llama/base --adapter adapter --data tiny-llama/eval.jsonl \
  --triggers tiny-llama/triggers.txt --candidates-from tiny-llama/data

echo
echo "==> tiny-llama/data/shard-002.jsonl is poisoned: find what it touched, rebuild without it"
step registry affected tiny-llama/data/shard-002.jsonl
step retrain adapter/provenance.intoto.json --key ../keys/signer.pub --sign-key ../keys/signer.key \
  --exclude shard-002.jsonl --out adapter-clean
step verify adapter-clean/provenance.intoto.json --key ../keys/signer.pub --model-dir adapter-clean
step registry lineage adapter-clean/adapter_model.safetensors
expect 0 probe --base tiny-llama/base --adapter adapter-clean --data tiny-llama/eval.jsonl \
  --triggers tiny-llama/triggers.txt --candidates-from tiny-llama/data
echo
echo "==> an unchanged retrain proves the record is complete: it must print IDENTICAL"
step retrain adapter/provenance.intoto.json --key ../keys/signer.pub --sign-key ../keys/signer.key

echo
echo "==> 3. gate the deploy: one verify --policy command (policy: examples/policy.toml)"
cp "$root/examples/policy.toml" ../policy.toml
step keygen --out ../keys/release-manager
step registry revoke tiny-llama/data/shard-002.jsonl --reason "planted trigger 'bee bee'"
expect 1 verify adapter/provenance.intoto.json --policy ../policy.toml --env prod --model-dir adapter
expect 1 verify adapter-clean/provenance.intoto.json --policy ../policy.toml --env prod --model-dir adapter-clean
step approve adapter-clean/provenance.intoto.json --policy ../policy.toml --env prod \
  --key ../keys/release-manager.key --note "clean retrain, probe quiet"
step verify adapter-clean/provenance.intoto.json --policy ../policy.toml --env prod --model-dir adapter-clean
step bom adapter-clean/provenance.intoto.json --key ../keys/signer.pub --format cyclonedx --out ../adapter-clean.cdx.json
step bom adapter-clean/provenance.intoto.json --key ../keys/signer.pub --format spdx --out ../adapter-clean.spdx.json

echo
echo "==> 4. record a wrapped training script, then verify it"
cd wrap-python
step run --out out --key ../../keys/signer.key --data data --config train.toml --param epochs=200 \
  -- python3 train.py --data data --out out --epochs 200
step verify out/provenance.intoto.json --key ../../keys/signer.pub --model-dir out --inputs
step registry list

venv="${TRAINPROV_VENV:-$root/.venv}"
if [[ -x "$venv/bin/model_signing" ]]; then
  echo
  echo "==> independent check with OpenSSF model_signing (from $venv)"
  echo "\$ model_signing verify key out --signature out/model.sig --public_key ../../keys/signer.pub"
  "$venv/bin/model_signing" verify key out --signature out/model.sig --public_key ../../keys/signer.pub
fi

echo
echo "==> a data shard changes after the run; verification must now fail (exit 1) and name it"
echo "0.1,0.2,0.3,0.4,1" >> data/part-001.csv
set +e
"$trainprov" verify out/provenance.intoto.json --key ../../keys/signer.pub --inputs
code=$?
set -e
if [[ $code -ne 1 ]]; then
  echo "quickstart: expected exit 1 for the changed data, got $code" >&2
  exit 1
fi
git checkout -q -- data/part-001.csv

echo
echo "==> 5. your own PyTorch + transformers + PEFT script (examples/wrap-peft) under trainprov run,"
echo "       on the three shards that are not revoked"
python="$("$root/scripts/torch-venv.sh")"
cd ../wrap-peft
# The determinism settings the script needs are set for the run, and recorded with it.
export PYTHONHASHSEED=0 OMP_NUM_THREADS=1 CUBLAS_WORKSPACE_CONFIG=:4096:8
echo
echo "\$ export PYTHONHASHSEED=0 OMP_NUM_THREADS=1 CUBLAS_WORKSPACE_CONFIG=:4096:8"
step run --out out --key ../../keys/signer.key --base ../tiny-llama/base --data data \
  -- "$python" train.py --base ../tiny-llama/base --data data --out out --steps 12
step verify out/provenance.intoto.json --key ../../keys/signer.pub --model-dir out --inputs
echo
echo "==> replay it from a shell without those settings: retrain restores them from the record"
unset PYTHONHASHSEED OMP_NUM_THREADS CUBLAS_WORKSPACE_CONFIG
step retrain out/provenance.intoto.json --key ../../keys/signer.pub --sign-key ../../keys/signer.key
echo
echo "==> replay it with one recorded setting changed: NOT IDENTICAL, and the report names it"
expect 1 retrain out/provenance.intoto.json --key ../../keys/signer.pub --sign-key ../../keys/signer.key \
  --env OMP_NUM_THREADS=2
echo
echo "quickstart: OK. The changed shard was caught, and the PEFT run replayed IDENTICAL. Files are in $work"
