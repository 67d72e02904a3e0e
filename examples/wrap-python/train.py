#!/usr/bin/env python3
"""A small, real training script to wrap with `trainprov run`: logistic regression by full-batch
gradient descent on every CSV under --data (standard library only, deterministic).

    python3 train.py --data data --out out --epochs 200 --lr 0.5

Writes OUT/model.json (weights) and OUT/metrics.json (loss per 20 epochs, final accuracy).
"""
import argparse
import glob
import json
import math
import os
import sys


def load(data_dir):
    rows = []
    for path in sorted(glob.glob(os.path.join(data_dir, "*.csv"))):
        with open(path) as f:
            header = f.readline().strip().split(",")
            if header[-1] != "label":
                sys.exit(f"{path}: last column must be 'label', got {header[-1]!r}")
            for line in f:
                if line.strip():
                    *x, y = line.strip().split(",")
                    rows.append(([float(v) for v in x], int(y)))
    if not rows:
        sys.exit(f"{data_dir}: no CSV rows found")
    return rows


def sigmoid(z):
    return 1.0 / (1.0 + math.exp(-max(min(z, 60.0), -60.0)))


def train(rows, epochs, lr):
    dims = len(rows[0][0])
    w, b, history = [0.0] * dims, 0.0, []
    for epoch in range(epochs):
        gw, gb, loss = [0.0] * dims, 0.0, 0.0
        for x, y in rows:
            p = sigmoid(sum(wi * xi for wi, xi in zip(w, x)) + b)
            loss -= y * math.log(p + 1e-12) + (1 - y) * math.log(1 - p + 1e-12)
            for i in range(dims):
                gw[i] += (p - y) * x[i]
            gb += p - y
        n = len(rows)
        w = [wi - lr * g / n for wi, g in zip(w, gw)]
        b -= lr * gb / n
        if epoch % 20 == 0 or epoch == epochs - 1:
            history.append({"epoch": epoch, "loss": round(loss / n, 6)})
            print(f"epoch {epoch:4d}  loss {loss / n:.4f}", flush=True)
    return w, b, history


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--lr", type=float, default=0.5)
    args = parser.parse_args()
    rows = load(args.data)
    w, b, history = train(rows, args.epochs, args.lr)
    correct = sum((sigmoid(sum(wi * xi for wi, xi in zip(w, x)) + b) > 0.5) == bool(y) for x, y in rows)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "model.json"), "w") as f:
        json.dump({"weights": [round(v, 8) for v in w], "bias": round(b, 8)}, f, indent=2)
        f.write("\n")
    with open(os.path.join(args.out, "metrics.json"), "w") as f:
        json.dump({"rows": len(rows), "accuracy": round(correct / len(rows), 6), "history": history}, f, indent=2)
        f.write("\n")
    print(f"trained on {len(rows)} rows, accuracy {correct / len(rows):.3f}")


if __name__ == "__main__":
    main()
