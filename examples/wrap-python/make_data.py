#!/usr/bin/env python3
"""Writes the example dataset deterministically: two CSV shards of a 4-feature binary
classification problem (seed 7). Standard library only.
    python3 examples/wrap-python/make_data.py
"""
import os
import random

rng = random.Random(7)
TRUE_W, TRUE_B = [1.5, -2.0, 0.7, 0.0], -0.2
here = os.path.dirname(os.path.abspath(__file__))
os.makedirs(os.path.join(here, "data"), exist_ok=True)
for shard in range(2):
    rows = ["x1,x2,x3,x4,label"]
    for _ in range(300):
        x = [round(rng.gauss(0.0, 1.0), 4) for _ in range(4)]
        z = sum(w * v for w, v in zip(TRUE_W, x)) + TRUE_B + rng.gauss(0.0, 0.5)
        rows.append(",".join(str(v) for v in x) + f",{1 if z > 0 else 0}")
    with open(os.path.join(here, "data", f"part-{shard:03d}.csv"), "w") as f:
        f.write("\n".join(rows) + "\n")
