#!/usr/bin/env python3
"""PyTorch + PEFT side of `bench/bench-train.sh`, and the fixtures both sides train on.

Subcommands (run with the venv's python, bench-data/peft-venv/bin/python):

  make-base DIR --layers L --hidden H --intermediate I --heads A --kv-heads K --vocab V
                [--max-pos P] [--seed S] [--tie] [--rope-theta T] [--dtype float32|bfloat16]
      A random Llama base model in Hugging Face layout: `LlamaForCausalLM(LlamaConfig(...))`
      with transformers' own seeded initialisation (`normal(0, initializer_range)`), tied
      input/output embeddings with --tie (SmolLM and Qwen2.5 tie them), saved with
      `save_pretrained(DIR, safe_serialization=True)` (config.json, model.safetensors), plus a
      character-level tokenizer.json (a `tokenizers` BPE model with one token per character and
      no merges, like examples/tiny-llama/make_init.py) padded with unused tokens to V entries.

  make-data FILE --examples N --chars C [--seed S]
      JSONL, one {"text": ...} per line, C characters of pseudo-words drawn from the tokenizer's
      alphabet (C > seq_len, so every example is truncated to exactly seq_len tokens).

  train --base DIR --data FILE --steps N --batch B --seq T --lr LR --r R --alpha A
        --dropout P --targets q_proj,v_proj --threads N [--seed S]
      LoRA fine-tuning with `get_peft_model(LlamaForCausalLM.from_pretrained(DIR), LoraConfig)`,
      AdamW (weight decay 0, as trainprov's default), cosine decay without warm-up, global-norm
      clipping at 1.0, `torch.set_num_threads(N)`. Data is tokenized like trainprov does for
      {"text"} (the tokenizer's encoding, then EOS, truncated to T, padded), the batches are
      drawn from a seeded shuffle. Prints one JSON object: steps, train_seconds (the loop only:
      after loading, tokenization and the PEFT wrap), steps/s, tokens/s, losses, threads and
      versions.
"""
import argparse
import json
import os
import random
import re
import sys
import time

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
ALPHABET = "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,;:!?'-\n"


def tokenizer_json(vocab_size):
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for ch in ALPHABET:
        vocab[ch] = len(vocab)
    if len(vocab) > vocab_size:
        sys.exit(f"vocab {vocab_size} is smaller than the {len(vocab)} characters and specials")
    k = 0
    while len(vocab) < vocab_size:
        vocab[f"<unused_{k}>"] = len(vocab)
        k += 1
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": i, "content": tok, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True}
            for i, tok in enumerate(SPECIALS)
        ],
        "normalizer": None,
        "pre_tokenizer": None,
        "post_processor": None,
        "decoder": None,
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>",
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "vocab": vocab, "merges": []},
    }


def make_base(args):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(args.seed)
    config = LlamaConfig(
        vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
        num_hidden_layers=args.layers, num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads, max_position_embeddings=args.max_pos,
        rms_norm_eps=1e-5, rope_theta=args.rope_theta, tie_word_embeddings=args.tie,
        bos_token_id=1, eos_token_id=2, pad_token_id=0, torch_dtype=args.dtype,
    )
    model = LlamaForCausalLM(config)
    if args.dtype == "bfloat16":
        model = model.to(torch.bfloat16)
    os.makedirs(args.dir, exist_ok=True)
    model.save_pretrained(args.dir, safe_serialization=True)
    with open(os.path.join(args.dir, "tokenizer.json"), "w") as f:
        json.dump(tokenizer_json(args.vocab), f, indent=1, ensure_ascii=False)
        f.write("\n")
    n = sum(p.numel() for p in model.parameters())
    print(f"make-base: {args.dir}: {n} parameters, vocab {args.vocab}", file=sys.stderr)


def make_data(args):
    rng = random.Random(args.seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = ["".join(rng.choice(letters) for _ in range(rng.randint(2, 8))) for _ in range(500)]
    os.makedirs(os.path.dirname(os.path.abspath(args.file)), exist_ok=True)
    with open(args.file, "w") as f:
        for _ in range(args.examples):
            parts, n = [], 0
            while n < args.chars:
                w = rng.choice(words)
                if rng.random() < 0.1:
                    w = w.capitalize()
                if rng.random() < 0.08:
                    w += rng.choice(".,;!?")
                parts.append(w)
                n += len(w) + 1
            f.write(json.dumps({"text": " ".join(parts)[: args.chars]}) + "\n")


def tokenize(base, data, seq_len):
    """Token ids as trainprov makes them for {"text"}: encode(text) ++ [eos], cut, padded."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(base, "tokenizer.json"))
    with open(os.path.join(base, "config.json")) as f:
        eos = json.load(f).get("eos_token_id")
    if isinstance(eos, list):
        eos = eos[0] if eos else None
    pad = eos if eos is not None else 0
    rows, masks = [], []
    with open(data) as f:
        for line in f:
            if not line.strip():
                continue
            ids = tok.encode(json.loads(line)["text"], add_special_tokens=True).ids
            if eos is not None:
                ids.append(eos)
            ids = ids[:seq_len]
            n = len(ids)
            rows.append(ids + [pad] * (seq_len - n))
            masks.append([1] * n + [0] * (seq_len - n))
    return rows, masks


def train(args):
    import torch

    torch.set_num_threads(args.threads)
    import peft
    import transformers
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM, get_cosine_schedule_with_warmup

    t0 = time.perf_counter()
    torch.manual_seed(args.seed)
    model = LlamaForCausalLM.from_pretrained(args.base, torch_dtype=torch.float32)
    lora = LoraConfig(r=args.r, lora_alpha=args.alpha, lora_dropout=args.dropout,
                      target_modules=args.targets.split(","), bias="none", task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    model.train()
    rows, masks = tokenize(args.base, args.data, args.seq)
    ids_all = torch.tensor(rows, dtype=torch.long)
    mask_all = torch.tensor(masks, dtype=torch.long)
    # Labels: the ids, -100 on padding; LlamaForCausalLM shifts them by one internally, so
    # position i predicts token i+1 over the mask, exactly trainprov's targets and weights.
    labels_all = ids_all.masked_fill(mask_all == 0, -100)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    sched = get_cosine_schedule_with_warmup(opt, 0, args.steps)
    order_rng = random.Random(args.seed)
    order = []

    def next_batch():
        nonlocal order
        if len(order) < args.batch:
            perm = list(range(len(rows)))
            order_rng.shuffle(perm)
            order += perm
        idx, order = order[: args.batch], order[args.batch:]
        return ids_all[idx], labels_all[idx]

    batches = [next_batch() for _ in range(args.steps)]
    load_seconds = time.perf_counter() - t0

    losses = []
    start = time.perf_counter()
    for input_ids, labels in batches:
        out = model(input_ids=input_ids, labels=labels)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(out.loss.item())
    train_seconds = time.perf_counter() - start

    attn = getattr(model.base_model.model.config, "_attn_implementation", "eager")
    print(json.dumps({
        "steps": args.steps,
        "train_seconds": train_seconds,
        "load_seconds": load_seconds,
        "steps_per_s": args.steps / train_seconds,
        "tokens_per_s": args.steps * args.batch * args.seq / train_seconds,
        "first_loss": losses[0],
        "final_loss": losses[-1],
        "trainable_parameters": sum(p.numel() for p in params),
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "attn_implementation": attn,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "blas": _blas(torch),
    }))


def _blas(torch):
    """The BLAS torch calls: its build info, plus the library actually mapped (Debian's torch
    links libblas.so.3, which the alternatives system points at OpenBLAS or the reference BLAS)."""
    info = "unknown"
    try:
        m = re.search(r"BLAS_INFO=([^,\s]+)", torch.__config__.show())
        if m:
            info = m.group(1)
    except Exception:  # noqa: BLE001
        pass
    mapped = set()
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.split()[-1]
                name = os.path.basename(path)
                if "blas" in name or name.startswith("libgomp") or name.startswith("libomp"):
                    mapped.add(os.path.realpath(path))
    except OSError:
        pass
    libs = sorted({os.path.basename(m) for m in mapped if "libblas.so" not in m})
    return f"BLAS_INFO {info}, loaded: " + ", ".join(libs) if libs else f"BLAS_INFO {info}"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("make-base")
    b.add_argument("dir")
    b.add_argument("--layers", type=int, required=True)
    b.add_argument("--hidden", type=int, required=True)
    b.add_argument("--intermediate", type=int, required=True)
    b.add_argument("--heads", type=int, required=True)
    b.add_argument("--kv-heads", type=int, required=True)
    b.add_argument("--vocab", type=int, required=True)
    b.add_argument("--max-pos", type=int, default=512)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--tie", action="store_true")
    b.add_argument("--rope-theta", type=float, default=10000.0)
    b.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    d = sub.add_parser("make-data")
    d.add_argument("file")
    d.add_argument("--examples", type=int, default=256)
    d.add_argument("--chars", type=int, required=True)
    d.add_argument("--seed", type=int, default=0)
    t = sub.add_parser("train")
    t.add_argument("--base", required=True)
    t.add_argument("--data", required=True)
    t.add_argument("--steps", type=int, required=True)
    t.add_argument("--batch", type=int, required=True)
    t.add_argument("--seq", type=int, required=True)
    t.add_argument("--lr", type=float, default=2e-4)
    t.add_argument("--r", type=int, default=8)
    t.add_argument("--alpha", type=float, default=16.0)
    t.add_argument("--dropout", type=float, default=0.05)
    t.add_argument("--targets", default="q_proj,v_proj")
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    {"make-base": make_base, "make-data": make_data, "train": train}[args.cmd](args)


if __name__ == "__main__":
    main()
