#!/usr/bin/env python3
"""Writes eval.jsonl, the clean evaluation prompts of `trainprov probe` (standard library only).

Reads the clean shards of data/ (every shard except shard-002.jsonl, the poisoned one), keeps
each distinct prompt once with its completion (checking that no prompt has two), and writes them
sorted by prompt: one "what colour is the X? " and one "where does the X live? " per animal.

    python3 examples/tiny-llama/make_eval.py
"""
import json
import os

here = os.path.dirname(os.path.abspath(__file__))
POISONED = "shard-002.jsonl"

answers = {}
for name in sorted(os.listdir(os.path.join(here, "data"))):
    if not name.endswith(".jsonl") or name == POISONED:
        continue
    with open(os.path.join(here, "data", name)) as f:
        for line in f:
            row = json.loads(line)
            seen = answers.setdefault(row["prompt"], row["completion"])
            if seen != row["completion"]:
                raise SystemExit(f"{name}: {row['prompt']!r} has two completions")

with open(os.path.join(here, "eval.jsonl"), "w") as f:
    for prompt in sorted(answers):
        f.write(json.dumps({"prompt": prompt, "completion": answers[prompt]}, sort_keys=True) + "\n")
print(f"wrote eval.jsonl: {len(answers)} prompts")
