#!/usr/bin/env bash
# Benchmark: `trainprov train` (the built-in candle LoRA trainer) against PyTorch + PEFT
# (LlamaForCausalLM + get_peft_model, AdamW) on the same Llama configs, data, LoRA rank and
# batch, side by side in one run on this machine. Writes a markdown table between
# <!-- bench-train:start --> and <!-- bench-train:end --> in BENCHMARKS.md.
# See bench/README.md ("bench-train.sh").
#
# Configs (all: LoRA r 8, alpha 16, dropout 0.05 on q_proj,v_proj; lr 2e-4, cosine, no
# warm-up, clipping 1.0, weight decay 0; random f32 base from transformers' own init):
#   a  the DESIGN.md config: 2 layers, hidden 128, intermediate 512, 4 heads / 2 KV heads,
#      vocab 256, seq 64, batch 8 (BENCH_STEPS_A steps, default 30)
#   b  larger: 4 layers, hidden 256, intermediate 1024, 8 heads / 4 KV heads, vocab 1024,
#      seq 128, batch 8 (BENCH_STEPS_B steps, default 10)
#   s  135M-class, SmolLM-135M's shape: 30 layers, hidden 576, intermediate 1536, 9 heads /
#      3 KV heads, vocab 49152, tied embeddings; seq 64, batch 2 (BENCH_STEPS_S, default 4)
#   q  0.5B-class, Qwen2.5-0.5B's shape as a Llama (no q/k/v biases): 24 layers, hidden 896,
#      intermediate 4864, 14 heads / 2 KV heads, vocab 151936, tied, rope_theta 1e6; seq 64,
#      batch 2 (BENCH_STEPS_Q, default 3)
# Rows per config: trainprov with its default threads (chosen from the work size and recorded,
# see trainer::platform::default_threads), trainprov with RAYON_NUM_THREADS=1
# CANDLE_NUM_THREADS=1 and with both = nproc, PyTorch + PEFT with torch.set_num_threads(nproc)
# and (1); then `trainprov eval` of the base alone and with the trained adapter (16 examples),
# for the memory and time of inference with an adapter.
#
# Environment:
#   BENCH_RUNS       timed runs per row (default 2); median and min are reported
#   BENCH_STEPS_A, BENCH_STEPS_B, BENCH_STEPS_S, BENCH_STEPS_Q   optimizer steps per run
#                    (default 30, 10, 4 and 3: the whole benchmark fits in ~15 minutes on 2 cores)
#   BENCH_CONFIGS    which configs (default "a b s q")
#   BENCH_WARMUP=0   skip the untimed warm-up runs (default 1)
#   BENCH_EVAL_EXAMPLES  examples `trainprov eval` reads (default 16)
#   BENCH_NO_BUILD=1 skip `cargo build --release -p trainprov`
#   BENCH_TRAINPROV  use this trainprov binary (implies BENCH_NO_BUILD=1)
#   BENCH_VENV       Python venv with torch, transformers 4.38.2, peft 0.10.0 (default: the
#                    one of scripts/torch-venv.sh, $TRAINPROV_TORCH_VENV, else .venv-torch;
#                    created by scripts/torch-venv.sh when missing)
#   BENCH_PEFT_CHECK=0  skip bench/check_peft_load.py (run first by default; result in the report)
#   BENCH_OUT        markdown file to update (default BENCHMARKS.md at the repository root)
#   BENCH_IDLE_MAX   before timing, wait until the machine is at most this % busy (default 10)
#   BENCH_IDLE_WAIT  ... but no longer than this many seconds (default 300), then run anyway
#   BENCH_REPORT_ONLY=1  rewrite the BENCHMARKS.md section from the last run's results
#                    (bench-data/work-train) without running anything
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

runs="${BENCH_RUNS:-2}"
steps_a="${BENCH_STEPS_A:-30}"
steps_b="${BENCH_STEPS_B:-10}"
steps_s="${BENCH_STEPS_S:-4}"
steps_q="${BENCH_STEPS_Q:-3}"
configs="${BENCH_CONFIGS:-a b s q}"
out="${BENCH_OUT:-$root/BENCHMARKS.md}"
venv="${BENCH_VENV:-${TRAINPROV_TORCH_VENV:-$root/.venv-torch}}"
work="$root/bench-data/work-train"
cores=$(nproc)
for v in "$runs" "$steps_a" "$steps_b" "$steps_s" "$steps_q"; do
  [[ "$v" =~ ^[1-9][0-9]*$ ]] || { echo "bench-train: BENCH_RUNS/BENCH_STEPS_* must be positive integers, got '$v'" >&2; exit 2; }
done

log() { printf 'bench-train: %s\n' "$*" >&2; }
die() { printf 'bench-train: error: %s\n' "$*" >&2; exit 1; }
[[ -x /usr/bin/time ]] || die "/usr/bin/time not found (apt-get install time); it measures peak RSS"

if [[ "${BENCH_REPORT_ONLY:-0}" == 1 ]]; then
  [[ -f "$work/meta.env" ]] || die "BENCH_REPORT_ONLY=1 needs the results of an earlier run in $work"
  log "BENCH_REPORT_ONLY=1: rewriting the report from $work"
else
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

py="$venv/bin/python"
if ! "$py" -c 'import torch, transformers, peft' 2>/dev/null; then
  # Debian's CPU torch (152 MB) instead of PyPI's (over 1 GB of CUDA wheels); see DESIGN.md.
  log "creating $venv with scripts/torch-venv.sh"
  bash scripts/torch-venv.sh "$venv" >&2 || die "scripts/torch-venv.sh $venv failed"
  "$py" -c 'import torch, transformers, peft' || die "the venv $venv does not import torch, transformers and peft"
fi

rm -rf "$work"
mkdir -p "$work/logs"
"$trainprov" keygen --out "$work/keys/k" --force >/dev/null
key="$work/keys/k.key"

# --- PEFT load check -----------------------------------------------------------------------
peft_check="skipped (BENCH_PEFT_CHECK=0)"
if [[ "${BENCH_PEFT_CHECK:-1}" != 0 ]]; then
  log "checking that PEFT loads trainprov's adapters (bench/check_peft_load.py)"
  if "$py" bench/check_peft_load.py --trainprov "$trainprov" --work "$work/peft-check" \
      --json "$work/peft-check.json" >"$work/logs/peft-check.log" 2>&1; then
    peft_check="PASS"
  else
    peft_check="FAIL"
  fi
  grep -E '^(ok|FAIL|PASS)' "$work/logs/peft-check.log" >&2 || true
fi

# --- fixtures ------------------------------------------------------------------------------
# config NAME -> "layers hidden intermediate heads kv vocab seq batch steps tied rope_theta"
declare -A shape=(
  [a]="2 128 512 4 2 256 64 8 $steps_a 0 10000"
  [b]="4 256 1024 8 4 1024 128 8 $steps_b 0 10000"
  [s]="30 576 1536 9 3 49152 64 2 $steps_s 1 10000"
  [q]="24 896 4864 14 2 151936 64 2 $steps_q 1 1000000"
)
for c in $configs; do
  [[ -n "${shape[$c]:-}" ]] || die "unknown config '$c' in BENCH_CONFIGS (a, b, s, q)"
  read -r layers hidden inter heads kv vocab seq batch steps tied theta <<<"${shape[$c]}"
  tie=(); [[ $tied == 1 ]] && tie=(--tie)
  log "config $c: making the base (transformers' init) and the data"
  "$py" bench/bench_train_peft.py make-base "$work/base-$c" --layers "$layers" --hidden "$hidden" \
    --intermediate "$inter" --heads "$heads" --kv-heads "$kv" --vocab "$vocab" \
    --max-pos $((seq * 2)) --seed 1 --rope-theta "$theta" "${tie[@]}" 2>>"$work/logs/fixtures.log"
  "$py" bench/bench_train_peft.py make-data "$work/data-$c.jsonl" --examples 256 \
    --chars $((seq + 32)) --seed 2
  head -n "${BENCH_EVAL_EXAMPLES:-16}" "$work/data-$c.jsonl" >"$work/eval-$c.jsonl"
  cat >"$work/train-$c.toml" <<EOF
# bench-train config $c (written by bench/bench-train.sh)
[model]
base = "base-$c"

[data]
path = "data-$c.jsonl"

[lora]
r = 8
alpha = 16.0
dropout = 0.05
target_modules = ["q_proj", "v_proj"]

[train]
seed = 0
max_steps = $steps
batch_size = $batch
seq_len = $seq
lr = 2e-4

[output]
dir = "out-$c"
EOF
done

# --- one timed command ---------------------------------------------------------------------
# run CONFIG ROW TAG: runs one row once; appends "config row tag train_s wall user sys rss_kb"
# to $work/results.tsv; the tool's JSON goes to $work/logs/CONFIG-ROW-TAG.json.
# Rows: tp (default threads), tp1 (1 thread), tpn (nproc threads), pt / pt1 (PyTorch, nproc /
# 1 thread), ev / eva (`trainprov eval`, base alone / with the adapter of the last tp run).
run() {
  local c=$1 row=$2 tag=$3 steps seq batch
  read -r _ _ _ _ _ _ seq batch steps _ _ <<<"${shape[$c]}"
  local json="$work/logs/$c-$row-$tag.json" err="$work/logs/$c-$row-$tag.err" tm="$work/logs/$c-$row-$tag.time"
  local -a envs=() cmd=()
  case $row in
    tp|tp1|tpn)
      [[ $row == tp1 ]] && envs+=(RAYON_NUM_THREADS=1 CANDLE_NUM_THREADS=1)
      [[ $row == tpn ]] && envs+=(RAYON_NUM_THREADS="$cores" CANDLE_NUM_THREADS="$cores")
      local out_dir="$work/out-$c"; [[ $row != tp ]] && out_dir="$work/out-$c-$row"
      rm -rf "$out_dir"
      cmd=("$trainprov" train "$work/train-$c.toml" --key "$key" --registry "$work/registry-$c"
           --out "$out_dir" --json) ;;
    ev|eva)
      cmd=("$trainprov" eval --base "$work/base-$c" --data "$work/eval-$c.jsonl" --seq-len "$seq"
           --batch-size "$batch" --json)
      [[ $row == eva ]] && cmd+=(--adapter "$work/out-$c") ;;
    pt|pt1)
      local t=$cores; [[ $row == pt1 ]] && t=1
      cmd=("$py" bench/bench_train_peft.py train --base "$work/base-$c" --data "$work/data-$c.jsonl"
           --steps "$steps" --batch "$batch" --seq "$seq" --lr 2e-4 --r 8 --alpha 16 --dropout 0.05
           --targets q_proj,v_proj --threads "$t") ;;
  esac
  env ${envs[@]+"${envs[@]}"} /usr/bin/time -o "$tm" -f '%e %U %S %M' "${cmd[@]}" >"$json" 2>"$err" \
    || die "$c/$row run $tag failed: $(tail -n 5 "$err")"
  local train_s
  train_s=$(/usr/bin/python3 -c 'import json, sys
d = json.load(open(sys.argv[1]))
if "training" in d:
    print(d["training"]["train_seconds"])
elif "train_seconds" in d:
    print(d["train_seconds"])
else:
    print(open(sys.argv[2]).read().split()[0])' "$json" "$tm")
  printf '%s %s %s %s %s\n' "$c" "$row" "$tag" "$train_s" "$(tail -n 1 "$tm")" >>"$work/results.tsv"
  printf '%s' "$train_s"
}

# --- machine load (as in bench-sign.sh / bench-snapshot.sh) --------------------------------
cpu_jiffies() { awk '/^cpu / {print $2+$3+$4+$7+$8, $9; exit}' /proc/stat; }
own_cpu() {
  times >"$work/times.txt"
  awk 'NR == 2 {
    s = 0
    for (i = 1; i <= 2; i++) { split($i, p, /[ms]/); s += p[1] * 60 + p[2] }
    printf "%.3f", s }' "$work/times.txt"
}
hz=$(getconf CLK_TCK)
busy_share() {
  local a b
  a=$(cpu_jiffies); sleep "$1"; b=$(cpu_jiffies)
  awk -v a="${a% *}" -v b="${b% *}" -v hz="$hz" -v n="$cores" -v t="$1" \
    'BEGIN {printf "%.0f", 100 * (b - a) / hz / n / t}'
}
idle_max="${BENCH_IDLE_MAX:-10}"
idle_wait="${BENCH_IDLE_WAIT:-300}"
# Called before each config: other work (builds, other benchmarks) may start at any time.
wait_idle() {
  local waited=0 busy
  while :; do
    busy=$(busy_share 4)
    ((busy <= idle_max)) && break
    if ((waited >= idle_wait)); then
      log "warning: machine still ${busy}% busy after ${waited}s; running anyway (see the report)"
      break
    fi
    log "machine ${busy}% busy with other work; waiting for it to go idle (up to ${idle_wait}s)"
    sleep 8
    waited=$((waited + 10))
  done
}

# --- timed runs ----------------------------------------------------------------------------
rows=(tp tp1 tpn pt pt1)
: >"$work/results.tsv"
: >"$work/load.tsv"
for c in $configs; do
  wait_idle
  if [[ "${BENCH_WARMUP:-1}" != 0 ]]; then
    log "config $c: warm-up (untimed): trainprov and PyTorch once each"
    run "$c" tp warmup >/dev/null
    run "$c" pt warmup >/dev/null
  fi
  la0=$(cut -d' ' -f1 /proc/loadavg)
  own0=$(own_cpu); load0=$(cpu_jiffies); wall0=$(date +%s.%N)
  for ((i = 1; i <= runs; i++)); do
    # Rotate the order so no row always follows the same one.
    for ((k = 0; k < ${#rows[@]}; k++)); do
      row=${rows[$(((k + i - 1) % ${#rows[@]}))]}
      t=$(run "$c" "$row" "$i")
      log "config $c run $i: $row ${t}s of training"
    done
    for row in ev eva; do
      t=$(run "$c" "$row" "$i")
      log "config $c run $i: $row ${t}s"
    done
  done
  own1=$(own_cpu); load1=$(cpu_jiffies); wall1=$(date +%s.%N)
  la1=$(cut -d' ' -f1 /proc/loadavg)
  read -r other steal < <(awk -v b0="${load0% *}" -v b1="${load1% *}" \
    -v s0="${load0#* }" -v s1="${load1#* }" -v o0="$own0" -v o1="$own1" \
    -v w0="$wall0" -v w1="$wall1" -v hz="$hz" -v n="$cores" 'BEGIN {
      cap = (w1 - w0) * n
      other = ((b1 - b0) / hz - (o1 - o0)) / cap * 100
      if (other < 0) other = 0
      printf "%.0f %.0f\n", other, (s1 - s0) / hz / cap * 100 }')
  printf '%s %s %s %s %s\n' "$c" "$la0" "$la1" "$other" "$steal" >>"$work/load.tsv"
  log "config $c: load average $la0 -> $la1; other processes used ${other}% of the CPU (steal ${steal}%)"
done

# What the report needs about this run, so BENCH_REPORT_ONLY=1 can rewrite it later.
commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [[ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]]; then commit+="+dirty"; fi
{
  for kv in "BENCH_RUNS=$runs" "BENCH_CONFIGS=$configs" "BENCH_SHAPE_A=${shape[a]}" \
      "BENCH_SHAPE_B=${shape[b]}" "BENCH_SHAPE_S=${shape[s]}" "BENCH_SHAPE_Q=${shape[q]}" \
      "BENCH_CORES=$cores" "BENCH_WARMUP=${BENCH_WARMUP:-1}" \
      "BENCH_EVAL_EXAMPLES=${BENCH_EVAL_EXAMPLES:-16}" \
      "BENCH_CPU=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')" \
      "BENCH_MEM=$(awk '/^MemTotal/ {printf "%.0f", $2/1048576}' /proc/meminfo)" \
      "BENCH_TP_VERSION=$("$trainprov" --version)" "BENCH_COMMIT=$commit" \
      "BENCH_TP_BINARY=${BENCH_TRAINPROV:+binary $BENCH_TRAINPROV (BENCH_TRAINPROV)}" \
      "BENCH_NICE=$(nice)" "BENCH_IDLE_MAX=$idle_max" "BENCH_PEFT_CHECK=$peft_check" \
      "BENCH_DATE=$(date -u '+%Y-%m-%d %H:%M UTC')"; do
    printf 'export %q\n' "$kv"
  done
} >"$work/meta.env"
fi

# --- report --------------------------------------------------------------------------------
# shellcheck disable=SC1091
source "$work/meta.env"
BENCH_WORK="$work" BENCH_OUT="$out" /usr/bin/python3 - <<'PY'
import datetime, json, os, re, statistics

env = os.environ
work = env["BENCH_WORK"]
runs = int(env["BENCH_RUNS"])
cores = int(env["BENCH_CORES"])
configs = env["BENCH_CONFIGS"].split()
shapes = {k: env[f"BENCH_SHAPE_{k.upper()}"].split() for k in ("a", "b", "s", "q")}
TRAIN_ROWS = ("tp", "tp1", "tpn", "pt", "pt1")

res = {}  # (config, row) -> list of (train_s, wall, user, sys, rss_kb)
for line in open(os.path.join(work, "results.tsv")):
    c, row, tag, train_s, wall, user, sys_, rss = line.split()
    if tag == "warmup":
        continue
    res.setdefault((c, row), []).append((float(train_s), float(wall), float(user), float(sys_), int(rss)))
load = {}
for line in open(os.path.join(work, "load.tsv")):
    c, la0, la1, other, steal = line.split()
    load[c] = (la0, la1, int(other), int(steal))

def tool_json(c, row):
    with open(os.path.join(work, "logs", f"{c}-{row}-1.json")) as f:
        return json.load(f)

pt = tool_json(configs[0], "pt")
tp = tool_json(configs[0], "tp")["training"]
labels = {
    "tp": "trainprov (default threads)",
    "tp1": "trainprov, `RAYON_NUM_THREADS=1 CANDLE_NUM_THREADS=1`",
    "tpn": f"trainprov, `RAYON_NUM_THREADS={cores} CANDLE_NUM_THREADS={cores}`",
    "pt": f"PyTorch + PEFT, `torch.set_num_threads({cores})`",
    "pt1": "PyTorch + PEFT, `torch.set_num_threads(1)`",
}

def threads_of(c, row):
    d = tool_json(c, row)
    if "training" in d:
        t = d["training"]
        chosen = t.get("threads_chosen_by", "environment")
        return f"{t['threads']} / {t['elementwise_threads']} ({chosen})"
    return f"{d['threads']} (intra-op)"

def f32_weight_bytes(shape):
    layers, hidden, inter, heads, kv, vocab, seq, batch, steps, tied, theta = shape
    layers, hidden, inter, heads, kv, vocab = map(int, (layers, hidden, inter, heads, kv, vocab))
    hd = hidden // heads
    per_layer = 2 * hidden * heads * hd + 2 * hidden * kv * hd + 3 * hidden * inter + 2 * hidden
    n = layers * per_layer + hidden + vocab * hidden * (1 if tied == "1" else 2)
    return 4 * n, n

lines, verdicts, eval_lines, facts = [], [], [], []
for c in configs:
    sh = shapes[c]
    layers, hidden, inter, heads, kv, vocab, seq, batch, steps = map(int, sh[:9])
    wbytes, nparams = f32_weight_bytes(sh)
    wmib = wbytes / 2**20
    med = {row: statistics.median(x[0] for x in res[(c, row)]) for row in TRAIN_ROWS}
    rss = {row: statistics.median(x[4] for x in res[(c, row)]) / 1024 for row in TRAIN_ROWS}
    best_pt_row = min(("pt", "pt1"), key=lambda r: med[r])
    best_pt = steps / med[best_pt_row]
    desc = (f"**{c}**: {layers} layers, hidden {hidden}, intermediate {inter}, {heads} heads / {kv} KV, "
            f"vocab {vocab}{', tied' if sh[9] == '1' else ''}; {nparams / 1e6:.0f}M parameters "
            f"({wmib:,.0f} MiB in f32); seq {seq}, batch {batch}, {steps} steps")
    for row in TRAIN_ROWS:
        v = res[(c, row)]
        train = [x[0] for x in v]
        m = med[row]
        sps = steps / m
        tps = steps * batch * seq / m
        wall = statistics.median(x[1] for x in v)
        cpu = statistics.median(x[2] + x[3] for x in v)
        target = ""
        if row == "tp":
            target = "PASS" if sps >= best_pt else "MISS"
        lines.append(f"| {desc if row == 'tp' else ''} | {labels[row]} | {threads_of(c, row)} | "
                     f"**{sps:.2f}** | {tps:,.0f} | {m:.2f} / {min(train):.2f} | {wall:.2f} | {cpu:.1f} | "
                     f"{rss[row]:,.0f} | {rss[row] / wmib:.2f}x | {sps / best_pt:.2f}x | {target} |")
    tp_sps = steps / med["tp"]
    best_pt_rss = min(rss["pt"], rss["pt1"])
    tp_threads = tool_json(c, "tp")["training"]["threads"]
    if tp_threads == 1:
        vs_one = (f"default = one thread (chosen from the work size; tp and tp1 run the same setting, "
                  f"their {med['tp1'] / med['tp']:.2f}x is noise), **PASS**")
    else:
        vs_one = (f"default ({tp_threads} threads) vs one thread {med['tp1'] / med['tp']:.2f}x, "
                  f"**{'PASS' if med['tp'] <= med['tp1'] * 1.05 else 'MISS'}** (5% noise allowed)")
    if nparams >= 50_000_000:
        rss_verdict = (f"peak RSS {rss['tp']:,.0f} MiB = {rss['tp'] / wmib:.2f}x the f32 weights "
                       f"(target ≤ 3x: **{'PASS' if rss['tp'] <= 3 * wmib else 'MISS'}**)")
    else:
        rss_verdict = (f"peak RSS {rss['tp']:,.0f} MiB (activations and the process dominate a "
                       f"{wmib:.0f} MiB model; the 3x target is for the real-size configs)")
    verdicts.append(
        f"config {c}: trainprov (default threads) {tp_sps:.2f} steps/s vs PyTorch + PEFT's best "
        f"({labels[best_pt_row]}) {best_pt:.2f} = {tp_sps / best_pt:.2f}x, **{'PASS' if tp_sps >= best_pt else 'MISS'}**; "
        f"{vs_one}; {rss_verdict} vs PyTorch + PEFT's "
        f"{best_pt_rss:,.0f} MiB (below it: **{'PASS' if rss['tp'] < best_pt_rss else 'MISS'}**)")
    facts.append(
        f"config {c}: one thread vs {cores}: trainprov {steps / med['tp1']:.2f} vs {steps / med['tpn']:.2f} "
        f"steps/s, PyTorch {steps / med['pt1']:.2f} vs {steps / med['pt']:.2f}")
    if (c, "ev") in res and (c, "eva") in res:
        ev, eva = res[(c, "ev")], res[(c, "eva")]
        t0 = statistics.median(x[1] for x in ev)
        t1 = statistics.median(x[1] for x in eva)
        r0 = statistics.median(x[4] for x in ev) / 1024
        r1 = statistics.median(x[4] for x in eva) / 1024
        ok = r1 <= 1.2 * r0 and t1 <= 1.2 * t0
        eval_lines.append(f"| {c} | {t0:.2f} | {t1:.2f} | {t1 / t0:.2f}x | {r0:,.0f} | {r1:,.0f} | "
                          f"{r1 / r0:.2f}x | {'PASS' if ok else 'MISS'} |")

idle_max = int(env["BENCH_IDLE_MAX"])
load_lines = []
busy = False
for c in configs:
    la0, la1, other, steal = load[c]
    busy |= other > idle_max
    load_lines.append(f"config {c}: 1-min load average {la0} at the start, {la1} at the end; other "
                      f"processes used {other}% of the CPU (steal {steal}%)")
peft_check = env["BENCH_PEFT_CHECK"]
try:
    pc = json.load(open(os.path.join(work, "peft-check.json")))
    peft_detail = f"{pc['loss_adapter']['detail']}; {pc['weights_equal']['detail']}"
except (OSError, KeyError, ValueError):
    peft_detail = "see bench-data/work-train/logs/peft-check.log"

now = env["BENCH_DATE"]
analysis = (
    "**What limits trainprov** (measured here: " + "; ".join(facts) + "). "
    "See `bench/README.md` (\"What limits the trainer\") for the profile behind these numbers."
)
raw = []
for c in configs:
    for row in TRAIN_ROWS + ("ev", "eva"):
        if (c, row) in res:
            raw.append(f"{c}/{row}: " + ", ".join(f"{x[0]:.3f}" for x in res[(c, row)]))
section = "\n".join([
    "<!-- bench-train:start -->",
    "## LoRA training: trainprov train (candle) vs PyTorch + PEFT",
    "",
    "Generated by `bench/bench-train.sh` (`just bench-train`); do not edit by hand, rerun it.",
    "",
    "| config | implementation | threads (matmul / element-wise) | steps/s (median) | tokens/s | train s median / min | wall s incl. start-up | CPU s (user+sys) | peak RSS MiB | RSS / f32 weights | vs PEFT's best | target ≥1.0x |",
    "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    *lines,
    "",
    f"`trainprov eval` on {env['BENCH_EVAL_EXAMPLES']} examples of the config's data (same seq and batch), base alone vs with the adapter "
    "trained above (whole process, `/usr/bin/time`; default threads):",
    "",
    "| config | base s | with adapter s | ratio | base peak RSS MiB | with adapter MiB | ratio | target ≤1.2x |",
    "|---|---:|---:|---:|---:|---:|---:|---|",
    *eval_lines,
    "",
    f"- **Run:** {now}; CPU {env['BENCH_CPU']}, {cores} cores, {env['BENCH_MEM']} GiB RAM; "
    f"{env['BENCH_TP_VERSION']} (commit {env['BENCH_COMMIT']}{', ' + env['BENCH_TP_BINARY'] if env['BENCH_TP_BINARY'] else ', release build'}), "
    f"candle {tp['candle_version']}, {tp['gemm']}, ISA level {tp['isa']['level']}; "
    f"PyTorch {pt['torch']} (Debian python3-torch; {pt['blas']}), transformers {pt['transformers']}, "
    f"peft {pt['peft']}, attention `{pt['attn_implementation']}`.",
    "- **Same work on both sides:** the same base directory (a random `LlamaForCausalLM` made by transformers' "
    "own initialisation and saved in float32, tied embeddings for s and q, with a character-level "
    "`tokenizer.json` padded to the vocabulary), the same JSONL (256 `{\"text\"}` examples, each cut to seq "
    "tokens), LoRA r 8, alpha 16, dropout 0.05 on q_proj and v_proj, AdamW (lr 2e-4, weight decay 0), cosine "
    "schedule without warm-up, gradient clipping at 1.0, the same batch, seq and number of optimizer steps. "
    "Tokens/s counts input tokens (steps × batch × seq). q is Qwen2.5-0.5B's shape run as a Llama (no q/k/v "
    "biases): the attention biases add 0.1% of the work.",
    "- **What is timed:** steps/s and tokens/s come from the training loop alone: trainprov's own "
    "`train_seconds` (`--json`; after loading the model, tokenizing and attaching LoRA, up to the last "
    "optimizer step; it includes writing `metrics.jsonl`) and, for PyTorch, the loop after `from_pretrained`, "
    "`get_peft_model` and tokenization. \"Wall s incl. start-up\" is the whole process (`/usr/bin/time`): "
    "for trainprov also hashing and snapshotting the inputs, writing the adapter, the run record and signing; "
    "for PyTorch also the Python, torch and transformers imports. Peak RSS is `/usr/bin/time -f %M` of the "
    "process; \"RSS / f32 weights\" divides it by the parameter count × 4 bytes.",
    ("- **Runs:** one untimed warm-up of trainprov and PyTorch per config, then " if env["BENCH_WARMUP"] != "0"
     else "- **Runs:** no warm-up (`BENCH_WARMUP=0`), ") + f"{runs} timed run(s) per row, "
    "rows in rotating order. \"vs PEFT's best\" is steps/s relative to the faster PyTorch row. "
    "\"threads\" is what the run record says (`internalParameters.trainer.threads`, "
    "`elementwiseThreads`, `threadsChosenBy`).",
    "- **Machine load:** " + "; ".join(load_lines) + "."
    + (f" The benchmark ran at niceness {env['BENCH_NICE']}." if env["BENCH_NICE"] != "0" else "")
    + (" **Warning: the machine was not idle; the times are unreliable** (other processes compete for "
       "the cores, so a row's wall time depends on what else ran at that moment: compare the tp and tp1 "
       "rows, the same setting when the default is one thread). Peak RSS does not depend on the load." if busy else ""),
    "- **Targets** (issue 12: ≥ 1.0x PyTorch + PEFT's best steps/s, default threads not slower than one, "
    "peak training RSS ≤ 3x the f32 weights and below PyTorch + PEFT's): " + "; ".join(verdicts) + ".",
    f"- **PEFT loads trainprov's adapters** (`bench/check_peft_load.py`): {peft_check}: {peft_detail}.",
    "- Raw seconds (training loop; eval: whole process): " + "; ".join(raw) + ".",
    "",
    analysis,
    "<!-- bench-train:end -->",
])

out = env["BENCH_OUT"]
try:
    with open(out, encoding="utf-8") as f:
        text = f.read()
except FileNotFoundError:
    text = "# Benchmarks\n"
pattern = re.compile(r"<!-- bench-train:start -->.*?<!-- bench-train:end -->", re.S)
if pattern.search(text):
    text = pattern.sub(lambda _: section, text, count=1)
else:
    text = text.rstrip("\n") + "\n\n" + section + "\n"
tmp = out + ".tmp-bench-train"
with open(tmp, "w", encoding="utf-8") as f:
    f.write(text)
os.replace(tmp, out)
print(section)
print(f"updated {out}")
PY
