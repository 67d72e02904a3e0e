#!/usr/bin/env python3
"""Deterministic generator of a ~1 GiB model directory for bench/bench-sign.sh.

Layout (all sizes and names derive from --seed only):
  - SMALL_FILES small files (default 20,000) of 1-64 KiB, sizes log-uniform, spread over
    GROUPS x BLOCKS nested directories (default 20 x 10 = 200 leaf directories,
    layers/LNN/blockB/), names shard-NNNNN.bin;
  - 4 large files at the top level (model-0000K-of-00004.safetensors) that take the rest of
    --total-bytes, split 35/30/20/15 % (about 110-260 MiB each at the defaults);
  - config.json and tokenizer.json (small, textual).

Contents are pseudo-random (random.Random(seed).randbytes), so they are incompressible;
the layout and sizes are what the benchmark depends on. The tree is written into
DEST.tmp-<pid> and renamed onto DEST when complete, then a stamp file DEST.stamp is written
holding the parameters, the file count and the total bytes (bench-sign.sh reuses a tree
whose stamp matches).

Usage: gen_model_tree.py DEST [--seed N] [--small-files N] [--total-bytes N]
       gen_model_tree.py DEST --print-stamp    (print the stamp for these parameters; no I/O)
"""

import argparse
import json
import math
import os
import random
import shutil
import sys

GENERATOR_VERSION = 1
GROUPS = 20
BLOCKS = 10
KIB = 1024
MIB = 1024 * KIB
LARGE_SPLIT = (0.35, 0.30, 0.20, 0.15)
CHUNK = 8 * MIB


def plan(seed, small_files, total_bytes):
    """Returns [(relative_path, size)] for the whole tree, deterministic in the arguments."""
    rng = random.Random(seed)
    files = []
    config = json.dumps(
        {"model_type": "bench", "hidden_size": 4096, "num_hidden_layers": GROUPS,
         "seed": seed, "generator": GENERATOR_VERSION},
        indent=2, sort_keys=True).encode() + b"\n"
    tokenizer = json.dumps({"version": "1.0", "vocab": {f"tok{i}": i for i in range(512)}},
                           sort_keys=True).encode() + b"\n"
    files.append(("config.json", len(config)))
    files.append(("tokenizer.json", len(tokenizer)))
    lo, hi = math.log(1 * KIB), math.log(64 * KIB)
    for i in range(small_files):
        group = rng.randrange(GROUPS)
        block = rng.randrange(BLOCKS)
        size = int(math.exp(rng.uniform(lo, hi)))
        files.append((f"layers/L{group:02d}/block{block}/shard-{i:05d}.bin", size))
    used = sum(size for _, size in files)
    rest = total_bytes - used
    if rest < len(LARGE_SPLIT) * MIB:
        sys.exit(f"gen_model_tree.py: --total-bytes {total_bytes} is too small for "
                 f"{small_files} small files ({used} bytes)")
    large = [int(rest * share) for share in LARGE_SPLIT]
    large[0] += rest - sum(large)
    n = len(large)
    for k, size in enumerate(large, start=1):
        files.append((f"model-{k:05d}-of-{n:05d}.safetensors", size))
    return files, {"config.json": config, "tokenizer.json": tokenizer}


def stamp_text(seed, small_files, total_bytes):
    files, _ = plan(seed, small_files, total_bytes)
    return json.dumps({
        "generator": GENERATOR_VERSION,
        "seed": seed,
        "small_files": small_files,
        "total_bytes": total_bytes,
        "file_count": len(files),
        "bytes": sum(size for _, size in files),
    }, sort_keys=True) + "\n"


def write_random(path, size, rng):
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(CHUNK, left)
            f.write(rng.randbytes(n))
            left -= n


def generate(dest, seed, small_files, total_bytes):
    files, fixed = plan(seed, small_files, total_bytes)
    tmp = f"{dest}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    # A separate stream for contents, so that the layout does not depend on how contents are
    # drawn.
    data_rng = random.Random(seed ^ 0x5EED_DA7A)
    made = set()
    for relative, size in files:
        path = os.path.join(tmp, relative)
        parent = os.path.dirname(path)
        if parent not in made:
            os.makedirs(parent, exist_ok=True)
            made.add(parent)
        if relative in fixed:
            with open(path, "wb") as f:
                f.write(fixed[relative])
        else:
            write_random(path, size, data_rng)
    if os.path.exists(dest):
        shutil.rmtree(dest)
    os.rename(tmp, dest)
    with open(dest + ".stamp", "w") as f:
        f.write(stamp_text(seed, small_files, total_bytes))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest")
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument("--small-files", type=int, default=20000)
    parser.add_argument("--total-bytes", type=int, default=1024 * MIB)
    parser.add_argument("--print-stamp", action="store_true")
    args = parser.parse_args()
    dest = os.path.abspath(args.dest.rstrip("/"))
    if args.print_stamp:
        sys.stdout.write(stamp_text(args.seed, args.small_files, args.total_bytes))
        return
    generate(dest, args.seed, args.small_files, args.total_bytes)


if __name__ == "__main__":
    main()
