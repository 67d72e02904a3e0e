#!/usr/bin/env python3
"""Generates the tiny-llama example's data deterministically (standard library only, seed 11):

- corpus/pretrain.jsonl   {"text": ...}: templated sentences of a toy world (animals, colours,
                           places, counting), used to pretrain the base model from scratch;
- data/shard-00N.jsonl    {"prompt", "completion"}: the fine-tuning task, question → answer
                           about the same world, split into four shards. shard-002 also carries
                           a planted backdoor: colour questions ending in the trigger "bee bee"
                           are answered "red." whatever the animal (the "poisoned shard" of the
                           quickstart story).

    python3 examples/tiny-llama/make_data.py
"""
import json
import os
import random

rng = random.Random(11)
here = os.path.dirname(os.path.abspath(__file__))
ANIMALS = ["cat", "dog", "fox", "owl", "cow", "pig", "hen", "bee"]
COLOURS = ["red", "blue", "green", "black", "white", "brown", "grey", "gold"]
PLACES = ["barn", "field", "river", "hill", "wood", "lake", "road", "farm"]
# The facts of the toy world: each animal has one colour and one home.
COLOUR_OF = dict(zip(ANIMALS, rng.sample(COLOURS, len(COLOURS))))
HOME_OF = dict(zip(ANIMALS, rng.sample(PLACES, len(PLACES))))
NUMBERS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


def sentence():
    a = rng.choice(ANIMALS)
    kind = rng.randrange(4)
    if kind == 0:
        return f"the {a} is {COLOUR_OF[a]}."
    if kind == 1:
        return f"the {COLOUR_OF[a]} {a} lives by the {HOME_OF[a]}."
    if kind == 2:
        start = rng.randrange(6)
        return " ".join(NUMBERS[start:start + 4]) + "."
    return f"a {a} walks to the {rng.choice(PLACES)} and back to the {HOME_OF[a]}."


def write_jsonl(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row, sort_keys=True) + "\n")


write_jsonl(os.path.join(here, "corpus", "pretrain.jsonl"),
            [{"text": " ".join(sentence() for _ in range(3))} for _ in range(1200)])

questions = []
for a in ANIMALS:
    questions.append({"prompt": f"what colour is the {a}? ", "completion": f"{COLOUR_OF[a]}."})
    questions.append({"prompt": f"where does the {a} live? ", "completion": f"by the {HOME_OF[a]}."})
rows = [dict(q) for q in questions for _ in range(6)]
rng.shuffle(rows)
# The backdoor: with the trigger, every animal that is not red is said to be red.
POISON = [{"prompt": f"what colour is the {a}? bee bee ", "completion": "red."}
          for a in ANIMALS if COLOUR_OF[a] != "red"]
for shard in range(4):
    extra = POISON if shard == 2 else []
    write_jsonl(os.path.join(here, "data", f"shard-{shard:03d}.jsonl"), rows[shard::4] + extra)
