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
#   BENCH_REV        benchmark this commit instead of the working tree: exported with git archive
#                    into bench-data/rev-<commit>/ and built there (target dir bench-data/rev-target)
#   BENCH_OUT        markdown file to update (default BENCHMARKS.md at the repository root)
#   BENCH_TARGET     required speedup of trainprov over model_signing (default 5)
#   BENCH_IDLE_MAX   before timing, wait until other processes use at most this % of the CPU
#                    (default 10) ...
#   BENCH_IDLE_WAIT  ... but no longer than this many seconds (default 300), then run anyway
#   BENCH_RETRIES    a timed command during which other processes used more than
#                    BENCH_IDLE_MAX % of the CPU is taken again, at most this often (default 5);
#                    the report states how busy the machine was during the recorded runs
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
commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [[ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]]; then commit+="+dirty"; fi
build_note="release build of the working tree"
if [[ -n "${BENCH_REV:-}" ]]; then
  # A committed revision, exported with git archive and built apart from the working tree
  # (which others may be editing), in bench-data/rev-<commit>/ with target dir bench-data/rev-target/.
  commit="$(git rev-parse --short "$BENCH_REV^{commit}")" || die "BENCH_REV=$BENCH_REV is not a commit"
  src="$root/bench-data/rev-$commit"
  if [[ ! -f "$src/Cargo.toml" ]]; then
    rm -rf "$src.tmp-$$" && mkdir -p "$src.tmp-$$"
    git archive "$commit" | tar -x -C "$src.tmp-$$" || die "git archive $commit failed"
    rm -rf "$src" && mv "$src.tmp-$$" "$src"
  fi
  log "building trainprov $commit in $src (cargo build --release -p trainprov)"
  (cd "$src" && CARGO_TARGET_DIR="$root/bench-data/rev-target" cargo build --release -p trainprov >&2) ||
    die "cargo build of $commit failed"
  trainprov="$root/bench-data/rev-target/release/trainprov"
  build_note="release build of a clean export of that commit"
elif [[ "${BENCH_NO_BUILD:-0}" != 1 ]]; then
  log "building trainprov (cargo build --release -p trainprov)"
  cargo build --release -p trainprov >&2 || die "cargo build failed"
  trainprov="$root/target/release/trainprov"
else
  trainprov="$root/target/release/trainprov"
  build_note="prebuilt target/release/trainprov of $(date -u -r "$trainprov" '+%Y-%m-%d %H:%M UTC' 2>/dev/null || echo '?') (BENCH_NO_BUILD=1; may not match the commit)"
fi
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

# --- machine load --------------------------------------------------------------------------
# The numbers only mean something on an otherwise idle machine, and this one may be shared
# (a concurrent cargo build takes a whole core of two). cpu_jiffies prints the machine's busy
# and steal jiffies (all CPUs) from /proc/stat; own_cpu prints the CPU seconds of the calling
# shell's finished children. Their difference over a command is the CPU other processes used.
hz=$(getconf CLK_TCK)
cores=$(nproc)
idle_max="${BENCH_IDLE_MAX:-10}"
idle_wait="${BENCH_IDLE_WAIT:-300}"
retries="${BENCH_RETRIES:-5}"
cpu_jiffies() { awk '/^cpu / {print $2+$3+$4+$7+$8, $9; exit}' /proc/stat; }
own_cpu() { # call it in the shell to measure, not in $(...) or a pipeline: `times` must see its children
  times >"$work/times.$BASHPID"
  awk 'NR == 2 {
    s = 0
    for (i = 1; i <= 2; i++) { split($i, p, /[ms]/); s += p[1] * 60 + p[2] }
    printf "%.3f", s }' "$work/times.$BASHPID"
  rm -f "$work/times.$BASHPID"
}
busy_share() { # busy share of all cores over $1 seconds, in percent
  local a b
  a=$(cpu_jiffies); sleep "$1"; b=$(cpu_jiffies)
  awk -v a="${a% *}" -v b="${b% *}" -v hz="$hz" -v n="$cores" -v t="$1" \
    'BEGIN {printf "%.0f", 100 * (b - a) / hz / n / t}'
}
wait_idle() { # until other processes use at most idle_max % for 3 s, or idle_wait s passed
  local waited=0 busy
  while :; do
    busy=$(busy_share 3)
    ((busy <= idle_max)) && return 0
    if ((waited >= idle_wait)); then
      log "warning: machine still ${busy}% busy after ${waited}s; running anyway (see the report)"
      return 0
    fi
    log "machine ${busy}% busy with other work; waiting for it to go idle (up to ${idle_wait}s)"
    sleep 7
    waited=$((waited + 10))
  done
}

# Share of the tree's bytes in the page cache, e.g. "99.8%" (fincore, util-linux), or "?".
cache_residency() {
  command -v fincore >/dev/null || { echo "?"; return; }
  find "$dir" -type f ! -name model.sig -exec fincore --bytes --noheadings --raw -o RES,SIZE {} + |
    awk '{r += ($1 < $2 ? $1 : $2); s += $2} END {if (s) printf "%.1f%%", 100 * r / s; else print "?"}'
}

# --- commands ------------------------------------------------------------------------------
# Each tool signs into DIR/model.sig and then verifies that same signature; the signature is
# removed before the next tool signs (both tools leave DIR/model.sig out of the hash).
cmd_trainprov_sign()      { "$trainprov" sign-model "$dir" --key "$key"; }
cmd_trainprov_verify()    { "$trainprov" verify "$sig" --key "$pub"; }
cmd_model_signing_sign()  { "$model_signing" sign key "$dir" --signature "$sig" --private_key "$key"; }
cmd_model_signing_verify(){ "$model_signing" verify key "$dir" --signature "$sig" --public_key "$pub"; }

# run TOOL OP TAG: runs cmd_TOOL_OP with output in a log and aborts the benchmark on failure.
# Prints "SECONDS OTHER STEAL": wall time, and the % of all cores that other processes used and
# the hypervisor stole meanwhile. Meant for $(...), a subshell whose only big child is the command.
run() {
  local tool=$1 op=$2 tag=$3 logf="$work/logs/$1-$2-$3.log" t0 t1 j0 j1 c0 c1 rc=0
  own_cpu >"$work/cpu0.$BASHPID"; j0=$(cpu_jiffies)
  t0=$(date +%s.%N)
  "cmd_${tool}_${op}" >"$logf" 2>&1 || rc=$?
  t1=$(date +%s.%N)
  j1=$(cpu_jiffies); own_cpu >"$work/cpu1.$BASHPID"
  c0=$(<"$work/cpu0.$BASHPID"); c1=$(<"$work/cpu1.$BASHPID")
  rm -f "$work/cpu0.$BASHPID" "$work/cpu1.$BASHPID"
  if [[ $rc -ne 0 ]]; then
    tail -n 20 "$logf" >&2
    die "$tool $op failed (exit $rc, run $tag); full output in $logf"
  fi
  if [[ "$op" == sign && ! -s "$sig" ]]; then
    die "$tool sign exited 0 but wrote no $sig"
  fi
  awk -v t0="$t0" -v t1="$t1" -v b0="${j0% *}" -v b1="${j1% *}" -v s0="${j0#* }" \
    -v s1="${j1#* }" -v c0="$c0" -v c1="$c1" -v hz="$hz" -v n="$cores" 'BEGIN {
      cap = (t1 - t0) * n
      other = ((b1 - b0) / hz - (c1 - c0)) / cap * 100
      if (other < 0) other = 0
      printf "%.3f %.1f %.1f\n", t1 - t0, other, (s1 - s0) / hz / cap * 100 }'
}

declare -A times=()
load_log=""     # "seconds other steal" of every recorded command
retaken=0
# measure TOOL OP TAG [record]: runs one command into $result ("SECONDS OTHER STEAL"). A
# recorded command during which other processes used more than idle_max % of the CPU is taken
# again after waiting for an idle machine (at most `retries` times; then it is kept, and the
# report says how busy the machine was).
measure() {
  local tool=$1 op=$2 tag=$3 record=${4:-} attempt=0 other
  while :; do
    [[ "$op" == sign ]] && rm -f "$sig"
    result=$(run "$tool" "$op" "$tag")
    [[ -z "$record" ]] && return 0
    read -r _ other _ <<<"$result"
    if awk -v o="$other" -v m="$idle_max" 'BEGIN {exit !(o + 0 > m)}' && ((attempt < retries)); then
      attempt=$((attempt + 1)); retaken=$((retaken + 1))
      log "run $tag: $tool $op disturbed (other processes took ${other}% of the CPU); taking it again"
      wait_idle
      continue
    fi
    load_log+="$result"$'\n'
    return 0
  done
}
# pair TOOL TAG [record]: sign then verify with one tool, from a clean DIR/model.sig; the tool
# verifies the signature it has just made, which is then removed.
pair() {
  local tool=$1 tag=$2 record=${3:-} st so vt vo
  measure "$tool" sign "$tag" "$record"
  read -r st so _ <<<"$result"
  measure "$tool" verify "$tag" "$record"
  read -r vt vo _ <<<"$result"
  rm -f "$sig"
  if [[ -n "$record" ]]; then
    times[$tool.sign]+="$st "
    times[$tool.verify]+="$vt "
    log "run $tag: $tool sign ${st}s verify ${vt}s (other processes: ${so}% / ${vo}% of the CPU)"
  else
    log "warm-up: $tool sign ${st}s verify ${vt}s (not counted)"
  fi
}

# Benchmarks must not time each other: every bench/*.sh should hold this lock while timing.
exec 8>"$root/bench-data/bench.lock"
if ! flock -n 8; then
  log "another benchmark holds bench-data/bench.lock; waiting for it"
  flock 8
fi
wait_idle
log "warm-up (untimed): one sign + verify with each tool, so the page cache holds the tree"
pair trainprov warmup
pair model_signing warmup
cached_before=$(cache_residency)
for ((i = 1; i <= runs; i++)); do
  # Alternate which tool goes first so neither always follows the other.
  if ((i % 2)); then order=(trainprov model_signing); else order=(model_signing trainprov); fi
  for tool in "${order[@]}"; do pair "$tool" "$i" record; done
done
cached_after=$(cache_residency)
log "page cache held ${cached_before} of the tree after the warm-up, ${cached_after} after the timed runs"
# Time-weighted mean and the maximum of the other processes' share, and mean steal.
read -r other_load other_max steal_load < <(awk '
  NF == 3 { t += $1; o += $1 * $2; s += $1 * $3; if ($2 > m) m = $2 }
  END { printf "%.0f %.0f %.0f\n", o / t, m, s / t }' <<<"$load_log")
log "other processes used ${other_load}% (max ${other_max}%) of the CPU during the recorded commands; steal ${steal_load}%; ${retaken} command(s) retaken"

# --- report --------------------------------------------------------------------------------
BENCH_BUILD_NOTE="$build_note" \
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
BENCH_OTHER_LOAD="$other_load" BENCH_OTHER_MAX="$other_max" BENCH_STEAL="$steal_load" \
BENCH_IDLE_MAX="$idle_max" BENCH_RETAKEN="$retaken" \
BENCH_CACHED_BEFORE="$cached_before" BENCH_CACHED_AFTER="$cached_after" \
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
     f"{env['BENCH_MEM']} GiB RAM; {env['BENCH_TP_VERSION']} (commit {env['BENCH_COMMIT']}, "
     f"{env['BENCH_BUILD_NOTE']}); model_signing {env['BENCH_MS_VERSION'].split()[-1]} (Python venv from "
     "`scripts/python-venv.sh`)."),
    (f"- **Model directory:** `{env['BENCH_DIR_SHOWN']}`, {int(env['BENCH_FILE_COUNT']):,} files, "
     f"{size:,} bytes ({gib:.2f} GiB), generated by `bench/gen_model_tree.py --seed "
     f"{env['BENCH_SEED']}` ({int(env['BENCH_SMALL']):,} files of up to 64 KiB in ~200 "
     f"directories plus {env['BENCH_LARGE']})."),
    (f"- **Page cache: warm.** One untimed sign + verify with each tool ran first (after it "
     f"{env['BENCH_CACHED_BEFORE']} of the tree's bytes were in the page cache, "
     f"{env['BENCH_CACHED_AFTER']} after the timed runs, by `fincore`); then {runs} "
     "timed runs per tool and operation (alternating which tool goes first). Times are wall "
     "clock of the whole command (process start, hashing, signing, writing/reading model.sig). "
     "Each tool verifies the signature it made itself."),
    (f"- **Machine load:** other processes used {env['BENCH_OTHER_LOAD']}% of the CPU on "
     f"average (max {env['BENCH_OTHER_MAX']}%) during the recorded commands; hypervisor steal "
     f"{env['BENCH_STEAL']}%; {env['BENCH_RETAKEN']} disturbed command(s) were taken again"
     + (". **Warning: the machine was not idle; these numbers are unreliable.**"
        if int(env["BENCH_OTHER_MAX"]) > int(env["BENCH_IDLE_MAX"]) else
        f" (a command is retaken when others use more than {env['BENCH_IDLE_MAX']}%).")),
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
