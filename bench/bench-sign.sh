#!/usr/bin/env bash
# Benchmark: trainprov sign-model / verify vs model_signing sign key / verify key on the same
# generated ~1 GiB model directory, in the same run, on this machine. Writes a markdown table
# between <!-- bench-sign:start --> and <!-- bench-sign:end --> in BENCHMARKS.md.
# See bench/README.md.
#
# Environment:
#   BENCH_RUNS       timed runs per tool and operation (default 3); median and min are reported
#   BENCH_DIR        the model directory (default bench-data/model-1g; regenerated unless
#                    BENCH_DIR.stamp matches the generator's parameters)
#   BENCH_SEED       generator seed (default 20240601)
#   BENCH_NO_BUILD=1 skip `cargo build --release -p trainprov` (use target/release/trainprov as is)
#   BENCH_OUT        markdown file to update (default BENCHMARKS.md at the repository root)
#   BENCH_TARGET     required speedup of trainprov over model_signing (default 5)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

runs="${BENCH_RUNS:-3}"
dir="${BENCH_DIR:-$root/bench-data/model-1g}"
seed="${BENCH_SEED:-20240601}"
out="${BENCH_OUT:-$root/BENCHMARKS.md}"
target="${BENCH_TARGET:-5}"
work="$root/bench-data/work"
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || { echo "bench-sign: BENCH_RUNS must be a positive integer, got '$runs'" >&2; exit 2; }
dir="$(mkdir -p "$(dirname "$dir")" && cd "$(dirname "$dir")" && pwd)/$(basename "$dir")"

log() { printf 'bench-sign: %s\n' "$*" >&2; }
die() { printf 'bench-sign: error: %s\n' "$*" >&2; exit 1; }

# --- tools ---------------------------------------------------------------------------------
if [[ "${BENCH_NO_BUILD:-0}" != 1 ]]; then
  log "building trainprov (cargo build --release -p trainprov)"
  cargo build --release -p trainprov >&2 || die "cargo build failed"
fi
trainprov="$root/target/release/trainprov"
[[ -x "$trainprov" ]] || die "$trainprov not found (build it, or unset BENCH_NO_BUILD)"

python="$("$root/scripts/python-venv.sh")" || die "scripts/python-venv.sh failed"
model_signing="$(dirname "$python")/model_signing"
[[ -x "$model_signing" ]] || die "$model_signing not found in the venv"

# --- model tree ----------------------------------------------------------------------------
gen=("$python" "$root/bench/gen_model_tree.py" "$dir" --seed "$seed")
want_stamp="$("${gen[@]}" --print-stamp)"
if [[ -d "$dir" && -f "$dir.stamp" && "$(cat "$dir.stamp")" == "$want_stamp" ]]; then
  log "reusing $dir (stamp matches)"
else
  log "generating $dir (seed $seed; takes a minute or so)"
  rm -f "$dir.stamp"
  t0=$(date +%s.%N)
  "${gen[@]}" || die "tree generation failed"
  t1=$(date +%s.%N)
  log "generated in $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}') s"
fi
sig="$dir/model.sig"
rm -f "$sig"
file_count=$(find "$dir" -type f | wc -l)
total_bytes=$(find "$dir" -type f -printf '%s\n' | awk '{s+=$1} END {printf "%d", s}')
want_count=$("$python" -c 'import json,sys; print(json.load(sys.stdin)["file_count"])' <<<"$want_stamp")
want_bytes=$("$python" -c 'import json,sys; print(json.load(sys.stdin)["bytes"])' <<<"$want_stamp")
[[ "$file_count" == "$want_count" && "$total_bytes" == "$want_bytes" ]] ||
  die "$dir has $file_count files / $total_bytes bytes, stamp says $want_count / $want_bytes; delete it and rerun"
large_files=$(find "$dir" -type f -size +1M -printf '%s\n' | sort -n |
  awk '{n++; a[n]=$1} END {if (n) printf "%d files of %.0f–%.0f MiB", n, a[1]/1048576, a[n]/1048576; else printf "no files over 1 MiB"}')
small_files=$((file_count - $(find "$dir" -type f -size +1M | wc -l)))
log "tree: $file_count files, $total_bytes bytes"

# --- keys ----------------------------------------------------------------------------------
mkdir -p "$work/logs"
"$trainprov" keygen --out "$work/keys/signer" --force >/dev/null || die "trainprov keygen failed"
key="$work/keys/signer.key"
pub="$work/keys/signer.pub"

# --- commands ------------------------------------------------------------------------------
# Each tool signs into DIR/model.sig and then verifies that same signature; the signature is
# removed before the next tool signs (both tools leave DIR/model.sig out of the hash).
cmd_trainprov_sign()      { "$trainprov" sign-model "$dir" --key "$key"; }
cmd_trainprov_verify()    { "$trainprov" verify "$sig" --key "$pub"; }
cmd_model_signing_sign()  { "$model_signing" sign key "$dir" --signature "$sig" --private_key "$key"; }
cmd_model_signing_verify(){ "$model_signing" verify key "$dir" --signature "$sig" --public_key "$pub"; }

# run TOOL OP TAG: runs cmd_TOOL_OP with output in a log, aborts on failure, prints seconds.
run() {
  local tool=$1 op=$2 tag=$3 logf="$work/logs/$1-$2-$3.log" t0 t1 rc=0
  t0=$(date +%s.%N)
  "cmd_${tool}_${op}" >"$logf" 2>&1 || rc=$?
  t1=$(date +%s.%N)
  if [[ $rc -ne 0 ]]; then
    tail -n 20 "$logf" >&2
    die "$tool $op failed (exit $rc, run $tag); full output in $logf"
  fi
  if [[ "$op" == sign && ! -s "$sig" ]]; then
    die "$tool sign exited 0 but wrote no $sig"
  fi
  awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f\n", b-a}'
}

declare -A times=()
# pair TOOL TAG [record]: sign then verify with one tool, from a clean DIR/model.sig.
pair() {
  local tool=$1 tag=$2 record=${3:-} s v
  rm -f "$sig"
  s=$(run "$tool" sign "$tag")
  v=$(run "$tool" verify "$tag")
  rm -f "$sig"
  if [[ -n "$record" ]]; then
    times[$tool.sign]+="$s "
    times[$tool.verify]+="$v "
    log "run $tag: $tool sign ${s}s verify ${v}s"
  else
    log "warm-up: $tool sign ${s}s verify ${v}s (not counted)"
  fi
}

log "warm-up (untimed): one sign + verify with each tool, so the page cache holds the tree"
pair trainprov warmup
pair model_signing warmup
for ((i = 1; i <= runs; i++)); do
  # Alternate which tool goes first so neither always follows the other.
  if ((i % 2)); then order=(trainprov model_signing); else order=(model_signing trainprov); fi
  for tool in "${order[@]}"; do pair "$tool" "$i" record; done
done

# --- report --------------------------------------------------------------------------------
commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [[ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]]; then commit+="+dirty"; fi

BENCH_TIMES_TP_SIGN="${times[trainprov.sign]}" \
BENCH_TIMES_TP_VERIFY="${times[trainprov.verify]}" \
BENCH_TIMES_MS_SIGN="${times[model_signing.sign]}" \
BENCH_TIMES_MS_VERIFY="${times[model_signing.verify]}" \
BENCH_RUNS="$runs" BENCH_TARGET="$target" BENCH_OUT="$out" \
BENCH_FILE_COUNT="$file_count" BENCH_TOTAL_BYTES="$total_bytes" BENCH_DIR_SHOWN="${dir#"$root"/}" \
BENCH_CPU="$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')" \
BENCH_CORES="$(nproc)" \
BENCH_MEM="$(awk '/^MemTotal/ {printf "%.0f", $2/1048576}' /proc/meminfo)" \
BENCH_TP_VERSION="$("$trainprov" --version)" BENCH_COMMIT="$commit" \
BENCH_MS_VERSION="$("$model_signing" --version 2>&1 | tail -n 1)" \
BENCH_SEED="$seed" BENCH_LARGE="$large_files" BENCH_SMALL="$small_files" \
"$python" - <<'PY'
import datetime, os, re, statistics

env = os.environ
runs = int(env["BENCH_RUNS"])
target = float(env["BENCH_TARGET"])
size = int(env["BENCH_TOTAL_BYTES"])
gib = size / 2**30
t = {
    ("trainprov", "sign"): env["BENCH_TIMES_TP_SIGN"],
    ("trainprov", "verify"): env["BENCH_TIMES_TP_VERIFY"],
    ("model_signing", "sign"): env["BENCH_TIMES_MS_SIGN"],
    ("model_signing", "verify"): env["BENCH_TIMES_MS_VERIFY"],
}
t = {k: [float(x) for x in v.split()] for k, v in t.items()}
med = {k: statistics.median(v) for k, v in t.items()}

commands = {
    ("trainprov", "sign"): "`trainprov sign-model DIR --key K.key`",
    ("trainprov", "verify"): "`trainprov verify DIR/model.sig --key K.pub`",
    ("model_signing", "sign"): "`model_signing sign key DIR --signature DIR/model.sig --private_key K.key`",
    ("model_signing", "verify"): "`model_signing verify key DIR --signature DIR/model.sig --public_key K.pub`",
}
rows = [
    "| tool | operation | median s | min s | GiB/s (median) | speedup vs model_signing | target ≥{:g}x |".format(target),
    "|---|---|---:|---:|---:|---:|---|",
]
summary = []
for op in ("sign", "verify"):
    speed = med[("model_signing", op)] / med[("trainprov", op)]
    verdict = "PASS" if speed >= target else "MISS"
    summary.append(f"{op} {speed:.2f}x {verdict}")
    for tool in ("trainprov", "model_signing"):
        k = (tool, op)
        rows.append("| {} | {} | {:.3f} | {:.3f} | {:.2f} | {} | {} |".format(
            tool, op, med[k], min(t[k]), gib / med[k],
            f"**{speed:.2f}x**" if tool == "trainprov" else "1.00x (baseline)",
            verdict if tool == "trainprov" else "",
        ))

now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
raw = "; ".join(
    "{} {}: {}".format(tool, op, ", ".join(f"{x:.3f}" for x in t[(tool, op)]))
    for tool in ("trainprov", "model_signing") for op in ("sign", "verify"))
section = "\n".join([
    "<!-- bench-sign:start -->",
    "## Model signing: trainprov vs model_signing",
    "",
    "Generated by `bench/bench-sign.sh` (`just bench-sign`); do not edit by hand, rerun it.",
    "",
    *rows,
    "",
    (f"- **Run:** {now}; CPU {env['BENCH_CPU']}, {env['BENCH_CORES']} cores, "
     f"{env['BENCH_MEM']} GiB RAM; {env['BENCH_TP_VERSION']} (commit {env['BENCH_COMMIT']}), "
     f"release build; model_signing {env['BENCH_MS_VERSION'].split()[-1]} (Python venv from "
     "`scripts/python-venv.sh`)."),
    (f"- **Model directory:** `{env['BENCH_DIR_SHOWN']}`, {int(env['BENCH_FILE_COUNT']):,} files, "
     f"{size:,} bytes ({gib:.2f} GiB), generated by `bench/gen_model_tree.py --seed "
     f"{env['BENCH_SEED']}` ({int(env['BENCH_SMALL']):,} files of up to 64 KiB in ~200 "
     f"directories plus {env['BENCH_LARGE']})."),
    (f"- **Page cache: warm.** One untimed sign + verify with each tool ran first; then {runs} "
     "timed runs per tool and operation (alternating which tool goes first). Times are wall "
     "clock of the whole command (process start, hashing, signing, writing/reading model.sig). "
     "Each tool verifies the signature it made itself."),
    (f"- **Target** (issue): trainprov ≥{target:g}x faster than model_signing for both sign and "
     "verify (model_signing was measured at 4.7 s sign / 4.0 s verify on such a tree). "
     f"Result: {'; '.join(summary)}."),
    f"- Raw times (s): {raw}.",
    "<!-- bench-sign:end -->",
])

out = env["BENCH_OUT"]
try:
    with open(out, encoding="utf-8") as f:
        text = f.read()
except FileNotFoundError:
    text = "# Benchmarks\n"
pattern = re.compile(r"<!-- bench-sign:start -->.*?<!-- bench-sign:end -->", re.S)
if pattern.search(text):
    text = pattern.sub(lambda _: section, text, count=1)
else:
    text = text.rstrip("\n") + "\n\n" + section + "\n"
tmp = out + ".tmp-bench"
with open(tmp, "w", encoding="utf-8") as f:
    f.write(text)
os.replace(tmp, out)
print("\n".join(rows))
print()
print("speedup: " + "; ".join(summary))
print(f"updated {out}")
PY
