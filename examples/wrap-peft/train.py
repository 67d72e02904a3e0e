#!/usr/bin/env python3
"""LoRA fine-tuning with PyTorch + transformers + PEFT, written to be replayed bit for bit.

    python train.py --base ../tiny-llama/base --data ../tiny-llama/data --out out --steps 12

Loads the Llama checkpoint in --base (config.json, model.safetensors, tokenizer.json), wraps it
with PEFT's LoraConfig + get_peft_model, trains the adapter with AdamW on every *.jsonl under
--data ({"prompt","completion"} rows; the loss covers the completion and the end-of-sequence
token), and writes OUT/adapter_model.safetensors + OUT/adapter_config.json with PEFT's
save_pretrained, with its model card OUT/README.md, plus OUT/training.json (the settings below and the loss per step).

Determinism: every source of randomness is seeded (random, numpy when present, torch), the data
order is drawn from a seeded generator and torch.use_deterministic_algorithms(True) is on.
Variables read when Python, torch's BLAS or CUDA start are required in the environment, so that
`trainprov run` records them and `trainprov retrain` restores them: PYTHONHASHSEED,
CUBLAS_WORKSPACE_CONFIG and OMP_NUM_THREADS (OpenBLAS sizes its thread pool from it when torch is
imported, and the adapter's bytes depend on that thread count; torch.set_num_threads gets the
same number).
"""
import argparse
import glob
import json
import os
import random
import sys

# Read before torch starts its thread pools or CUDA.
REQUIRED_ENV = {"PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1", "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}
missing = [k for k in REQUIRED_ENV if k not in os.environ]
if missing:
    sys.exit(
        "train.py: set " + " ".join(f"{k}={REQUIRED_ENV[k]}" for k in missing)
        + " in the environment (trainprov records it and retrain restores it)"
    )

# Everything is local: never ask the Hugging Face hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import transformers  # noqa: E402
import peft  # noqa: E402
from peft import LoraConfig, get_peft_model  # noqa: E402
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast  # noqa: E402


def determinism(seed):
    """Applies and returns every setting that decides the adapter's bytes."""
    threads = int(os.environ["OMP_NUM_THREADS"])
    random.seed(seed)
    try:
        import numpy

        numpy.random.seed(seed)
    except ImportError:
        numpy = None
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    if torch.cuda.is_available():
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    return {
        "seed": seed,
        "torch_threads": torch.get_num_threads(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "env": {k: os.environ.get(k) for k in ("PYTHONHASHSEED", "CUBLAS_WORKSPACE_CONFIG", "OMP_NUM_THREADS")},
        "versions": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
            "numpy": numpy.__version__ if numpy else None,
        },
        "device": "cpu",
    }


def load_rows(data_dir):
    rows = []
    for path in sorted(glob.glob(os.path.join(data_dir, "*.jsonl"))):
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    rows.append((str(row["prompt"]), str(row["completion"])))
                except (ValueError, KeyError, TypeError) as e:
                    sys.exit(f"{path}:{n}: expected a JSON object with \"prompt\" and \"completion\": {e}")
    if not rows:
        sys.exit(f"{data_dir}: no *.jsonl rows found")
    return rows


def encode(tokenizer, rows, seq_len, eos, pad):
    """input_ids, labels (-100 outside the completion) and attention masks, padded to seq_len."""
    ids, labels, masks = [], [], []
    for prompt, completion in rows:
        p = tokenizer.encode(prompt, add_special_tokens=False)
        c = tokenizer.encode(completion, add_special_tokens=False) + [eos]
        tokens = (p + c)[:seq_len]
        target = ([-100] * len(p) + c)[:seq_len]
        n = len(tokens)
        ids.append(tokens + [pad] * (seq_len - n))
        labels.append(target + [-100] * (seq_len - n))
        masks.append([1] * n + [0] * (seq_len - n))
    return torch.tensor(ids), torch.tensor(labels), torch.tensor(masks)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="Llama checkpoint directory")
    parser.add_argument("--data", required=True, help="directory of {prompt, completion} *.jsonl")
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=48)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--alpha", type=float, default=16.0)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    settings = determinism(args.seed)
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=os.path.join(args.base, "tokenizer.json"))
    model = LlamaForCausalLM.from_pretrained(args.base, torch_dtype=torch.float32)
    eos, pad = model.config.eos_token_id, model.config.pad_token_id or 0
    lora = LoraConfig(
        r=args.rank,
        lora_alpha=args.alpha,
        lora_dropout=0.05,
        target_modules=["q_proj", "v_proj"],
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    # The record names the base by its digest; a path written into the products would differ
    # between a run and its replay, so they name the base by its directory name only.
    base_name = os.path.basename(os.path.normpath(args.base))
    model.peft_config["default"].base_model_name_or_path = base_name
    model.config.name_or_path = base_name
    model.train()

    ids, labels, masks = encode(tokenizer, load_rows(args.data), args.seq_len, eos, pad)
    order = torch.Generator().manual_seed(args.seed)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr)
    losses, perm, at = [], torch.randperm(len(ids), generator=order), 0
    for step in range(args.steps):
        if at + args.batch_size > len(ids):
            perm, at = torch.randperm(len(ids), generator=order), 0
        batch = perm[at : at + args.batch_size]
        at += args.batch_size
        loss = model(input_ids=ids[batch], attention_mask=masks[batch], labels=labels[batch]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        print(f"step {step:3d}  loss {loss.item():.4f}", flush=True)

    os.makedirs(args.out, exist_ok=True)
    # save_pretrained updates OUT/README.md (the model card), or makes one from a template that
    # needs jinja2: start it here.
    with open(os.path.join(args.out, "README.md"), "w", encoding="utf-8") as f:
        f.write(f"---\nlibrary_name: peft\n---\n# LoRA adapter for {base_name}\n\nTrained by examples/wrap-peft/train.py.\n")
    model.save_pretrained(args.out, safe_serialization=True, save_embedding_layers=False)
    with open(os.path.join(args.out, "training.json"), "w", encoding="utf-8") as f:
        hyper = {k: v for k, v in vars(args).items() if k not in ("base", "data", "out")}
        json.dump({"settings": settings, "hyperparameters": hyper, "loss": losses}, f, indent=2, sort_keys=True)
        f.write("\n")
    print(f"trained {args.steps} steps on {len(ids)} rows, final loss {losses[-1]:.4f}")


if __name__ == "__main__":
    main()
