#!/usr/bin/env bash
# Benchmark: `trainprov snapshot` (full rehash, and no-change re-snapshot from the hash cache)
# against b3sum, sha256sum, md5sum and DVC (`dvc add`, no-change `dvc status`) on the same
# generated ~1 GiB data directory, side by side in one run on this machine. Writes a markdown
# table between <!-- bench-snapshot:start --> and <!-- bench-snapshot:end --> in BENCHMARKS.md.
# See bench/README.md ("bench-snapshot.sh").
#
# Environment:
#   BENCH_RUNS       timed runs per command (default 3); median and min are reported
#   BENCH_DIR        the data directory (default bench-data/data-1g; regenerated unless
#                    BENCH_DIR.stamp matches the generator's parameters)
#   BENCH_SEED       generator seed (default 20240611)
#   BENCH_SMALL_FILES, BENCH_LARGE_FILES
#                    the generator's file counts (default 20000 and 4; for quick trials)
#   BENCH_THREADS    threads for trainprov (RAYON_NUM_THREADS), b3sum --num-threads and the
#                    parallel xargs of sha256sum/md5sum (default: nproc)
#   BENCH_NO_BUILD=1 skip `cargo build --release -p trainprov` (use target/release/trainprov)
#   BENCH_TRAINPROV  use this trainprov binary instead (implies BENCH_NO_BUILD=1)
#   BENCH_OUT        markdown file to update (default BENCHMARKS.md at the repository root)
#   BENCH_IDLE_MAX   before timing, wait until the machine is at most this % busy (default 10)
#   BENCH_IDLE_WAIT  ... but no longer than this many seconds (default 300), then run anyway;
#                    the report states how busy the machine was during the timed runs
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

runs="${BENCH_RUNS:-3}"
dir="${BENCH_DIR:-$root/bench-data/data-1g}"
seed="${BENCH_SEED:-20240611}"
threads="${BENCH_THREADS:-$(nproc)}"
out="${BENCH_OUT:-$root/BENCHMARKS.md}"
work="$root/bench-data/work-snapshot"
tools="$root/bench-data/tools"
dvc_venv="$root/bench-data/dvc-venv"
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || { echo "bench-snapshot: BENCH_RUNS must be a positive integer, got '$runs'" >&2; exit 2; }
[[ "$threads" =~ ^[1-9][0-9]*$ ]] || { echo "bench-snapshot: BENCH_THREADS must be a positive integer, got '$threads'" >&2; exit 2; }
dir="$(mkdir -p "$(dirname "$dir")" && cd "$(dirname "$dir")" && pwd)/$(basename "$dir")"

log() { printf 'bench-snapshot: %s\n' "$*" >&2; }
die() { printf 'bench-snapshot: error: %s\n' "$*" >&2; exit 1; }

python=python3
command -v "$python" >/dev/null || die "python3 not found (needed for the generator and the report)"

# --- tools ---------------------------------------------------------------------------------
if [[ -n "${BENCH_TRAINPROV:-}" ]]; then
  trainprov="$BENCH_TRAINPROV"
else
  if [[ "${BENCH_NO_BUILD:-0}" != 1 ]]; then
    log "building trainprov (cargo build --release -p trainprov)"
    cargo build --release -p trainprov >&2 || die "cargo build failed"
  fi
  trainprov="$root/target/release/trainprov"
fi
[[ -x "$trainprov" ]] || die "$trainprov not found (build it, or unset BENCH_NO_BUILD)"

b3sum="$tools/bin/b3sum"
if [[ ! -x "$b3sum" ]]; then
  if command -v b3sum >/dev/null; then
    b3sum="$(command -v b3sum)"
  else
    log "installing b3sum into $tools (cargo install b3sum --locked; about a minute)"
    cargo install b3sum --locked --root "$tools" >&2 || die "cargo install b3sum failed"
  fi
fi

dvc="$dvc_venv/bin/dvc"
if [[ ! -x "$dvc" ]]; then
  log "installing DVC into $dvc_venv (pip install dvc)"
  rm -rf "$dvc_venv"
  "$python" -m venv "$dvc_venv" || die "python3 -m venv failed"
  "$dvc_venv/bin/pip" install --quiet dvc >&2 || die "pip install dvc failed"
fi
export DVC_NO_ANALYTICS=1

# --- data tree -----------------------------------------------------------------------------
small_files="${BENCH_SMALL_FILES:-20000}"
large_files="${BENCH_LARGE_FILES:-4}"
gen=("$python" "$root/bench/gen_data_tree.py" "$dir" --seed "$seed"
  --small-files "$small_files" --large-files "$large_files")
want_stamp="$("${gen[@]}" --print-stamp)"
if [[ -d "$dir" && -f "$dir.stamp" && "$(cat "$dir.stamp")" == "$want_stamp" ]]; then
  log "reusing $dir (stamp matches)"
else
  log "generating $dir (seed $seed; about 20 s)"
  rm -f "$dir.stamp"
  "${gen[@]}" || die "tree generation failed"
fi
file_count=$(find "$dir" -type f | wc -l)
total_bytes=$(find "$dir" -type f -printf '%s\n' | awk '{s+=$1} END {printf "%d", s}')
stamp_field() { "$python" -c "import json,sys; print(json.load(sys.stdin)['$1'])" <<<"$want_stamp"; }
[[ "$file_count" == "$(stamp_field file_count)" && "$total_bytes" == "$(stamp_field bytes)" ]] ||
  die "$dir has $file_count files / $total_bytes bytes, its stamp disagrees; delete it and rerun"
log "tree: $file_count files, $total_bytes bytes"

rm -rf "$work"
mkdir -p "$work/logs"
registry="$work/registry"

# --- commands ------------------------------------------------------------------------------
# Every command reads the whole tree (or, for the no-change cases, stats it) and writes its
# result to a log. sha256sum and md5sum are single-threaded programs, so xargs runs
# BENCH_THREADS of them at once.
cmd_tp_rehash() { RAYON_NUM_THREADS=$threads "$trainprov" snapshot "$dir" --rehash --registry "$registry" --json; }
cmd_tp_first() { RAYON_NUM_THREADS=$threads "$trainprov" snapshot "$dir" --registry "$work/registry-first" --json; }
cmd_tp_cached() { RAYON_NUM_THREADS=$threads "$trainprov" snapshot "$dir" --registry "$registry" --json; }
cmd_b3sum() { find "$dir" -type f -print0 | xargs -0 "$b3sum" --num-threads "$threads"; }
cmd_sha256sum() { find "$dir" -type f -print0 | xargs -0 -P "$threads" -n 2500 sha256sum; }
cmd_md5sum() { find "$dir" -type f -print0 | xargs -0 -P "$threads" -n 2500 md5sum; }
# dvc add: a fresh DVC project holding a fresh copy of the tree each run (the copy is not
# timed); DVC hashes every file (md5) and copies it into .dvc/cache (its default cache.type
# "reflink,copy"; this file system has no reflinks). dvc status runs in another project, set
# up once (untimed) by the same steps.
dvc_add_project="$work/dvc-add"
dvc_status_project="$work/dvc-status"
prepare_dvc() { # prepare_dvc DIR: a new DVC project in DIR with a copy of the tree as DIR/data
  rm -rf "$1"
  mkdir -p "$1"
  cp -r "$dir" "$1/data"
  (cd "$1" &&
    "$dvc" init --no-scm -q &&
    "$dvc" config core.analytics false &&
    "$dvc" config core.check_update false &&
    "$dvc" config core.site_cache_dir "$1/.site-cache") >&2 || die "dvc init failed in $1"
}
cmd_dvc_add() { (cd "$dvc_add_project" && "$dvc" add data); }
cmd_dvc_status() { (cd "$dvc_status_project" && "$dvc" status); }

# run NAME TAG: runs cmd_NAME with stdout in a log (stderr beside it), aborts on failure,
# prints seconds.
run() {
  local name=$1 tag=$2 logf="$work/logs/$1-$2.log" t0 t1 rc=0
  t0=$(date +%s.%N)
  "cmd_$name" >"$logf" 2>"$logf.err" || rc=$?
  t1=$(date +%s.%N)
  if [[ $rc -ne 0 ]]; then
    tail -n 20 "$logf" "$logf.err" >&2
    die "$name failed (exit $rc, run $tag); output in $logf and $logf.err"
  fi
  awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.4f\n", b-a}'
}

# json_field FILE KEY[.KEY...]: one field of a JSON file.
json_field() {
  "$python" -c 'import json, sys
v = json.load(open(sys.argv[1]))
for k in sys.argv[2].split("."): v = v[k]
print(v)' "$1" "$2"
}

# --- machine load (as in bench-sign.sh) ----------------------------------------------------
cpu_jiffies() { awk '/^cpu / {print $2+$3+$4+$7+$8, $9; exit}' /proc/stat; }
own_cpu() {
  times >"$work/times.txt"
  awk 'NR == 2 {
    s = 0
    for (i = 1; i <= 2; i++) { split($i, p, /[ms]/); s += p[1] * 60 + p[2] }
    printf "%.3f", s }' "$work/times.txt"
}
hz=$(getconf CLK_TCK)
cores=$(nproc)
busy_share() {
  local a b
  a=$(cpu_jiffies); sleep "$1"; b=$(cpu_jiffies)
  awk -v a="${a% *}" -v b="${b% *}" -v hz="$hz" -v n="$cores" -v t="$1" \
    'BEGIN {printf "%.0f", 100 * (b - a) / hz / n / t}'
}
idle_max="${BENCH_IDLE_MAX:-10}"
idle_wait="${BENCH_IDLE_WAIT:-300}"
waited=0
while :; do
  busy=$(busy_share 2)
  ((busy <= idle_max)) && break
  if ((waited >= idle_wait)); then
    log "warning: machine still ${busy}% busy after ${waited}s; running anyway (see the report)"
    break
  fi
  log "machine ${busy}% busy with other work; waiting for it to go idle (up to ${idle_wait}s)"
  sleep 8
  waited=$((waited + 10))
done

# --- correctness check and warm-up (untimed) -----------------------------------------------
log "warm-up (untimed): every command once, so the page cache holds the tree"
run tp_rehash warmup >/dev/null
manifest="$work/data.manifest"
"$trainprov" snapshot "$dir" --registry "$registry" --manifest "$manifest" --json >"$work/logs/manifest.json"
run b3sum warmup >/dev/null
# The manifest's file lines must agree with b3sum's digests, path for path.
"$python" - "$manifest" "$work/logs/b3sum-warmup.log" "$dir" <<'PY' || die "trainprov and b3sum disagree"
import sys
manifest, b3, root = sys.argv[1], sys.argv[2], sys.argv[3].rstrip("/") + "/"
ours = {}
for line in open(manifest, encoding="utf-8").read().splitlines()[1:]:
    kind, size, digest, path = line.split("\t")[:4]
    if kind == "f":
        ours[path] = digest
theirs = {}
for line in open(b3, encoding="utf-8"):
    digest, path = line.rstrip("\n").split("  ", 1)
    theirs[path[len(root):] if path.startswith(root) else path] = digest
if ours != theirs:
    bad = sorted(set(ours.items()) ^ set(theirs.items()))[:5]
    sys.exit(f"manifest vs b3sum: {len(ours)} vs {len(theirs)} files; first differences {bad}")
print(f"bench-snapshot: manifest agrees with b3sum on all {len(ours)} files", file=sys.stderr)
PY
run tp_cached warmup >/dev/null
run tp_first warmup >/dev/null
run sha256sum warmup >/dev/null
run md5sum warmup >/dev/null
log "setting up the DVC project for dvc status (copy + dvc add, untimed)"
prepare_dvc "$dvc_status_project"
(cd "$dvc_status_project" && "$dvc" add -q data) >&2 || die "dvc add failed in $dvc_status_project"
run dvc_status warmup >/dev/null
grep -q "up to date" "$work/logs/dvc_status-warmup.log" ||
  die "dvc status reports changes: $(cat "$work/logs/dvc_status-warmup.log")"

# Every no-change and hashing command in one rotation, so that they share whatever load the
# machine has; then `dvc add`, which needs a fresh copy of the tree per run.
declare -A times=()
order=(tp_rehash tp_first tp_cached b3sum sha256sum md5sum dvc_status)
own_cpu >"$work/own0"; load0=$(cpu_jiffies); own0=$(<"$work/own0"); wall0=$(date +%s.%N)
for ((i = 1; i <= runs; i++)); do
  # Rotate the order so no command always follows the same one.
  for ((k = 0; k < ${#order[@]}; k++)); do
    name=${order[$(((k + i - 1) % ${#order[@]}))]}
    # The first-snapshot row starts from an empty hash cache every time.
    [[ "$name" == tp_first ]] && rm -rf "$work/registry-first"
    t=$(run "$name" "$i")
    times[$name]+="$t "
    if [[ "$name" == tp_cached ]]; then
      hit=$(json_field "$work/logs/tp_cached-$i.log" from_cache)
      [[ "$hit" == "$file_count" ]] || die "no-change snapshot took $hit of $file_count files from the cache"
    fi
    log "run $i: $name ${t}s"
  done
done
own_cpu >"$work/own1"; load1=$(cpu_jiffies); own1=$(<"$work/own1"); wall1=$(date +%s.%N)

for ((i = 1; i <= runs; i++)); do
  prepare_dvc "$dvc_add_project"
  t=$(run dvc_add "$i")
  times[dvc_add]+="$t "
  log "run $i: dvc add ${t}s"
done
own_cpu >"$work/own2"; load2=$(cpu_jiffies); own2=$(<"$work/own2"); wall2=$(date +%s.%N)

# Other processes' share of the CPU, and hypervisor steal, in percent of all cores: during the
# rotation (every row but dvc add), and during the dvc add runs (their copies count as ours).
load_share() { # load_share JIFFIES0 JIFFIES1 OWN0 OWN1 WALL0 WALL1
  awk -v b0="${1% *}" -v b1="${2% *}" -v s0="${1#* }" -v s1="${2#* }" -v o0="$3" -v o1="$4" \
    -v w0="$5" -v w1="$6" -v hz="$hz" -v n="$cores" 'BEGIN {
    cap = (w1 - w0) * n
    other = ((b1 - b0) / hz - (o1 - o0)) / cap * 100
    if (other < 0) other = 0
    printf "%.0f %.0f\n", other, (s1 - s0) / hz / cap * 100 }'
}
read -r other_load steal_load < <(load_share "$load0" "$load1" "$own0" "$own1" "$wall0" "$wall1")
read -r other_load_add steal_load_add < <(load_share "$load1" "$load2" "$own1" "$own2" "$wall1" "$wall2")
log "other processes used ${other_load}% of the CPU during the rotation (steal ${steal_load}%)," \
  "${other_load_add}% during dvc add (steal ${steal_load_add}%)"

# --- report --------------------------------------------------------------------------------
commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [[ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]]; then commit+="+dirty"; fi

BENCH_T_TP_REHASH="${times[tp_rehash]}" BENCH_T_TP_FIRST="${times[tp_first]}" \
BENCH_T_TP_CACHED="${times[tp_cached]}" \
BENCH_T_B3SUM="${times[b3sum]}" BENCH_T_SHA256SUM="${times[sha256sum]}" \
BENCH_T_MD5SUM="${times[md5sum]}" BENCH_T_DVC_ADD="${times[dvc_add]}" \
BENCH_T_DVC_STATUS="${times[dvc_status]}" \
BENCH_RUNS="$runs" BENCH_THREADS="$threads" BENCH_OUT="$out" \
BENCH_FILE_COUNT="$file_count" BENCH_TOTAL_BYTES="$total_bytes" BENCH_DIR_SHOWN="${dir#"$root"/}" \
BENCH_SEED="$seed" BENCH_SMALL="$small_files" BENCH_LARGE="$large_files" BENCH_DIGEST="$(json_field "$work/logs/manifest.json" digest.blake3)" \
BENCH_CPU="$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')" \
BENCH_CORES="$cores" BENCH_MEM="$(awk '/^MemTotal/ {printf "%.0f", $2/1048576}' /proc/meminfo)" \
BENCH_FS="$(stat -f -c %T "$dir")" \
BENCH_TP_VERSION="$("$trainprov" --version)" BENCH_COMMIT="$commit" \
BENCH_TP_BINARY="${BENCH_TRAINPROV:+binary $BENCH_TRAINPROV (BENCH_TRAINPROV)}" \
BENCH_B3SUM_VERSION="$("$b3sum" --version)" \
BENCH_SHA_VERSION="$(sha256sum --version | head -n 1)" \
BENCH_DVC_VERSION="$("$dvc" --version 2>/dev/null | tail -n 1)" \
BENCH_OTHER_LOAD="$other_load" BENCH_STEAL="$steal_load" BENCH_IDLE_MAX="$idle_max" \
BENCH_OTHER_LOAD_ADD="$other_load_add" BENCH_STEAL_ADD="$steal_load_add" \
"$python" - <<'PY'
import datetime, os, re, statistics

env = os.environ
runs = int(env["BENCH_RUNS"])
threads = int(env["BENCH_THREADS"])
size = int(env["BENCH_TOTAL_BYTES"])
files = int(env["BENCH_FILE_COUNT"])
keys = ["TP_REHASH", "TP_FIRST", "TP_CACHED", "B3SUM", "SHA256SUM", "MD5SUM", "DVC_ADD", "DVC_STATUS"]
t = {k: [float(x) for x in env["BENCH_T_" + k].split()] for k in keys}
med = {k: statistics.median(v) for k, v in t.items()}
labels = {
    "TP_REHASH": f"`trainprov snapshot --rehash` ({threads} threads; cache rows already current)",
    "TP_FIRST": "`trainprov snapshot`, empty hash cache (hashes all, stores all)",
    "TP_CACHED": "`trainprov snapshot`, warm hash cache, nothing changed",
    "B3SUM": f"`b3sum --num-threads {threads}` (find \\| xargs)",
    "SHA256SUM": f"`sha256sum` (find \\| xargs -P {threads})",
    "MD5SUM": f"`md5sum` (find \\| xargs -P {threads})",
    "DVC_ADD": "`dvc add DIR` (md5 + copy into .dvc/cache)",
    "DVC_STATUS": "`dvc status`, nothing changed",
}
rehash_vs_b3 = med["B3SUM"] / med["TP_REHASH"]
cached_vs_dvc = med["DVC_STATUS"] / med["TP_CACHED"]
verdict = {
    "TP_REHASH": ("≥1.0x b3sum: " + ("PASS" if rehash_vs_b3 >= 1.0 else "MISS")),
    "TP_CACHED": (f"≥10x faster than `dvc status` ({cached_vs_dvc:.1f}x): "
                  + ("PASS" if cached_vs_dvc >= 10 else "MISS")),
}
rows = [
    "| command | median s | min s | GB/s (median) | files/s (median) | speed vs b3sum | target |",
    "|---|---:|---:|---:|---:|---:|---|",
]
for k in keys:
    rows.append("| {} | {:.3f} | {:.3f} | {:.2f} | {:,.0f} | {:.2f}x | {} |".format(
        labels[k], med[k], min(t[k]), size / med[k] / 1e9, files / med[k],
        med["B3SUM"] / med[k], verdict.get(k, "")))

now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
raw = "; ".join("{}: {}".format(k.lower(), ", ".join(f"{x:.3f}" for x in t[k])) for k in keys)
busy = int(env["BENCH_OTHER_LOAD"]) > int(env["BENCH_IDLE_MAX"])
busy_add = int(env["BENCH_OTHER_LOAD_ADD"]) > int(env["BENCH_IDLE_MAX"])
section = "\n".join([
    "<!-- bench-snapshot:start -->",
    "## Data snapshots: trainprov snapshot vs b3sum, sha256sum, md5sum and DVC",
    "",
    "Generated by `bench/bench-snapshot.sh`; do not edit by hand, rerun it.",
    "",
    *rows,
    "",
    (f"- **Run:** {now}; CPU {env['BENCH_CPU']}, {env['BENCH_CORES']} cores, "
     f"{env['BENCH_MEM']} GiB RAM, file system {env['BENCH_FS']}; {env['BENCH_TP_VERSION']} "
     f"(commit {env['BENCH_COMMIT']}), "
     f"{env['BENCH_TP_BINARY'] or 'release build of this tree'}; {env['BENCH_B3SUM_VERSION']}; "
     f"{env['BENCH_SHA_VERSION']}; DVC {env['BENCH_DVC_VERSION']}."),
    (f"- **Data:** `{env['BENCH_DIR_SHOWN']}`, {files:,} files, {size:,} bytes "
     f"({size / 2**30:.2f} GiB), generated by `bench/gen_data_tree.py --seed {env['BENCH_SEED']}`: "
     f"{int(env['BENCH_SMALL']):,} files of 4–64 KiB in 100 directories plus "
     f"{int(env['BENCH_LARGE'])} of 80 MiB. Snapshot digest "
     f"`{env['BENCH_DIGEST']}`; the manifest's per-file digests were checked against b3sum's."),
    (f"- **Page cache: warm.** Every command ran once untimed first; then {runs} timed runs "
     "each, in rotating order. Times are wall clock of the whole command (process start, walk, "
     "hashing, output). `dvc add` runs in a fresh DVC project on a fresh copy of the tree each "
     "time (the copy is not timed), after the other commands; `dvc status` runs in the rotation "
     "with the others, in a project set up the same way. The hash cache for "
     "the no-change row was filled by the `--rehash` runs; each no-change run was checked to "
     "take every file from the cache. `--rehash` reads every file but finds the cache's rows "
     "current and writes none; the empty-cache row (a fresh registry each run) shows the cost "
     "of storing all of them."),
    (f"- **Machine load:** other processes used {env['BENCH_OTHER_LOAD']}% of the CPU during "
     f"the rotation of all rows but `dvc add` (hypervisor steal {env['BENCH_STEAL']}%), and "
     f"{env['BENCH_OTHER_LOAD_ADD']}% during the `dvc add` runs (steal {env['BENCH_STEAL_ADD']}%"
     + ("; that row is inflated by it" if busy_add else "") + ")"
     + (". **Warning: the machine was not idle; these numbers are unreliable.**" if busy else
        "; the script waits for an idle machine before it starts.")),
    (f"- **Targets** (issue 3): `--rehash` at least as fast as b3sum with the same thread count "
     f"(**{rehash_vs_b3:.2f}x**: {'PASS' if rehash_vs_b3 >= 1.0 else 'MISS'}); an unchanged "
     f"re-snapshot at least 10x faster than `dvc status` (**{cached_vs_dvc:.1f}x**: "
     f"{'PASS' if cached_vs_dvc >= 10 else 'MISS'})."),
    f"- Raw times (s): {raw}.",
    "<!-- bench-snapshot:end -->",
])

out = env["BENCH_OUT"]
try:
    with open(out, encoding="utf-8") as f:
        text = f.read()
except FileNotFoundError:
    text = "# Benchmarks\n"
pattern = re.compile(r"<!-- bench-snapshot:start -->.*?<!-- bench-snapshot:end -->", re.S)
if pattern.search(text):
    text = pattern.sub(lambda _: section, text, count=1)
else:
    text = text.rstrip("\n") + "\n\n" + section + "\n"
tmp = out + ".tmp-bench-snapshot"
with open(tmp, "w", encoding="utf-8") as f:
    f.write(text)
os.replace(tmp, out)
print("\n".join(rows))
print()
print(f"--rehash vs b3sum: {rehash_vs_b3:.2f}x; no-change vs dvc status: {cached_vs_dvc:.1f}x")
print(f"updated {out}")
PY
