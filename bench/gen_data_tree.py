#!/usr/bin/env python3
"""Deterministic generator of a ~1 GiB data directory for bench/bench-snapshot.sh.

Layout (all names and sizes derive from --seed only):
  - SMALL_FILES small files (default 20,000) of 4-64 KiB, sizes uniform at byte resolution,
    spread over 100 directories train/part-NNN/ as rec-NNNNN.bin (a sharded dataset);
  - 4 large files blobs/blob-K.bin of 80 MiB each (packed arrays, tokenised corpora).

Default total: about 0.98 GiB in 20,004 files. Contents are pseudo-random
(random.Random(seed).randbytes), so they are incompressible and identical on every machine for
a seed. The tree is written into DEST.tmp-<pid> and renamed onto DEST when complete, then
DEST.stamp records the parameters, file count and byte count; bench-snapshot.sh reuses a tree
whose stamp matches.

Usage: gen_data_tree.py DEST [--seed N] [--small-files N] [--large-files N]
       gen_data_tree.py DEST --print-stamp    (print the stamp for these parameters; no I/O)
"""

import argparse
import json
import os
import random
import shutil
import sys

GENERATOR_VERSION = 1
DIRECTORIES = 100
KIB = 1024
MIB = 1024 * KIB
SMALL_MIN = 4 * KIB
SMALL_MAX = 64 * KIB
LARGE_SIZE = 80 * MIB
CHUNK = 8 * MIB


def plan(seed, small_files, large_files):
    """Returns [(relative_path, size)] for the whole tree, deterministic in the arguments."""
    rng = random.Random(seed)
    files = []
    for i in range(small_files):
        part = rng.randrange(DIRECTORIES)
        size = rng.randint(SMALL_MIN, SMALL_MAX)
        files.append((f"train/part-{part:03d}/rec-{i:05d}.bin", size))
    for k in range(large_files):
        files.append((f"blobs/blob-{k}.bin", LARGE_SIZE))
    return files


def stamp_text(seed, small_files, large_files):
    files = plan(seed, small_files, large_files)
    return json.dumps({
        "generator": GENERATOR_VERSION,
        "seed": seed,
        "small_files": small_files,
        "large_files": large_files,
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


def generate(dest, seed, small_files, large_files):
    files = plan(seed, small_files, large_files)
    tmp = f"{dest}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    # A separate stream for contents, so the layout does not depend on how contents are drawn.
    data_rng = random.Random(seed ^ 0x5EED_DA7A)
    made = set()
    for relative, size in files:
        path = os.path.join(tmp, relative)
        parent = os.path.dirname(path)
        if parent not in made:
            os.makedirs(parent, exist_ok=True)
            made.add(parent)
        write_random(path, size, data_rng)
    if os.path.exists(dest):
        shutil.rmtree(dest)
    os.rename(tmp, dest)
    with open(dest + ".stamp", "w") as f:
        f.write(stamp_text(seed, small_files, large_files))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest")
    parser.add_argument("--seed", type=int, default=20240611)
    parser.add_argument("--small-files", type=int, default=20000)
    parser.add_argument("--large-files", type=int, default=4)
    parser.add_argument("--print-stamp", action="store_true")
    args = parser.parse_args()
    if args.small_files < 0 or args.large_files < 0:
        sys.exit("gen_data_tree.py: file counts must not be negative")
    dest = os.path.abspath(args.dest.rstrip("/"))
    if args.print_stamp:
        sys.stdout.write(stamp_text(args.seed, args.small_files, args.large_files))
        return
    generate(dest, args.seed, args.small_files, args.large_files)


if __name__ == "__main__":
    main()
