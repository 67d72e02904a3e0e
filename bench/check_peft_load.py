#!/usr/bin/env python3
"""Checks that PEFT loads trainprov's LoRA adapters and computes the same thing with them.

1. Builds a tiny random Llama base (Hugging Face layout, character-level tokenizer.json; see
   bench_train_peft.py make-base) and a small {"text"} JSONL file.
2. Trains an adapter on it with `trainprov train` (LoRA on all seven projections q,k,v,o,
   gate,up,down, r 4, alpha 8, a high learning rate so lora_B is far from zero).
3. In Python: `PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(base), adapter)`, then
   checks that
   - the adapter's safetensors metadata is absent or exactly {"format": "pt"};
   - its tensor names are exactly the ones PEFT itself saves for that LoraConfig
     (`get_peft_model_state_dict` of a fresh `get_peft_model`), with PEFT's shapes;
   - loading them with `set_peft_model_state_dict` reports no unexpected keys and no missing
     LoRA keys;
   - every LoRA weight PEFT holds after from_pretrained equals the file's tensor bit for bit;
   - the mean token loss of the PEFT model (eval mode) on the data equals
     `trainprov eval --base B --adapter A --json` within --tol (default 1e-4), computed the
     way trainprov computes it (encode(text) ++ [eos], cut to seq_len, position i predicts
     i+1, padding masked, summed in float64 over all batches, divided by the token count);
   - the same for the base model alone (`trainprov eval` without --adapter), and the adapter
     moves the loss by far more than the tolerance, so the comparison has teeth.
   trainprov exposes no logits, only the loss; equal mean loss over every token of the data
   is the logits comparison in aggregate.

Run (from the repository root, after `cargo build --release -p trainprov` and with the venv of
bench/README.md "bench-train.sh"):

    bench-data/peft-venv/bin/python bench/check_peft_load.py [--trainprov target/release/trainprov]

Exit status 0 and a final "PASS" line when every check holds; 1 and "FAIL: ..." otherwise.
`--json FILE` also writes the results as JSON (bench-train.sh puts them in BENCHMARKS.md).
"""
import argparse
import json
import os
import shutil
import struct
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import bench_train_peft as fixtures  # noqa: E402

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def sh(cmd, **kw):
    res = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if res.returncode != 0:
        sys.exit(f"FAIL: {' '.join(map(str, cmd))} exited {res.returncode}:\n{res.stdout}\n{res.stderr}")
    return res.stdout


def safetensors_metadata(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    return header.get("__metadata__")


def peft_mean_loss(model, rows, masks, batch):
    import torch

    total, tokens = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(rows), batch):
            ids = torch.tensor(rows[i:i + batch], dtype=torch.long)
            mask = torch.tensor(masks[i:i + batch], dtype=torch.float32)
            logits = model(input_ids=ids).logits.float()
            logp = torch.log_softmax(logits[:, :-1, :], dim=-1)
            nll = -logp.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
            w = mask[:, 1:]  # target i+1 counts when it is a real token
            total += float((nll * w).sum(dtype=torch.float64))
            tokens += int(w.sum())
    return total / max(tokens, 1), tokens


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trainprov", default=os.path.join(ROOT, "target", "release", "trainprov"))
    p.add_argument("--work", default=os.path.join(ROOT, "bench-data", "work-peft-check"))
    p.add_argument("--tol", type=float, default=1e-4)
    p.add_argument("--json", dest="json_out")
    args = p.parse_args()

    import torch
    import peft
    import transformers
    from peft import LoraConfig, PeftModel, get_peft_model
    from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import LlamaForCausalLM

    torch.set_num_threads(1)
    tp = os.path.abspath(args.trainprov)
    if not os.access(tp, os.X_OK):
        sys.exit(f"FAIL: {tp} not found; run `cargo build --release -p trainprov` first")
    work = os.path.abspath(args.work)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    base, data, adapter = (os.path.join(work, n) for n in ("base", "data.jsonl", "adapter"))
    seq, batch, r, alpha = 32, 4, 4, 8.0

    fixtures.make_base(argparse.Namespace(dir=base, layers=2, hidden=64, intermediate=160, heads=4,
                                          kv_heads=2, vocab=96, max_pos=128, seed=7,
                                          tie=False, rope_theta=10000.0,
                                          dtype="float32"))
    # Texts of mixed lengths: some shorter than seq_len (padding and EOS count), some cut.
    fixtures.make_data(argparse.Namespace(file=data, examples=24, chars=40, seed=3))
    with open(data) as f:
        lines = [json.loads(x)["text"] for x in f]
    with open(data, "w") as f:
        for i, t in enumerate(lines):
            f.write(json.dumps({"text": t[: 8 + (i * 7) % 33]}) + "\n")

    config = os.path.join(work, "train.toml")
    with open(config, "w") as f:
        f.write(f"""[model]
base = "base"

[data]
path = "data.jsonl"

[lora]
r = {r}
alpha = {alpha}
dropout = 0.05
target_modules = {json.dumps(TARGETS)}

[train]
seed = 5
max_steps = 30
batch_size = {batch}
seq_len = {seq}
lr = 1e-2

[output]
dir = "adapter"
""")
    sh([tp, "keygen", "--out", os.path.join(work, "keys", "k"), "--force"])
    sh([tp, "train", config, "--key", os.path.join(work, "keys", "k.key"),
        "--registry", os.path.join(work, "registry"), "--json"])
    st = os.path.join(adapter, "adapter_model.safetensors")
    results = {"torch": torch.__version__, "transformers": transformers.__version__,
               "peft": peft.__version__, "targets": TARGETS, "r": r, "alpha": alpha}
    failures = []

    def check(name, ok, detail):
        results[name] = {"ok": bool(ok), "detail": detail}
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}")
        if not ok:
            failures.append(name)

    meta = safetensors_metadata(st)
    check("metadata", meta in (None, {"format": "pt"}), f"__metadata__ = {meta}")

    # What PEFT itself would save for this LoraConfig.
    lcfg = LoraConfig.from_pretrained(adapter)
    check("adapter_config", lcfg.r == r and lcfg.lora_alpha == alpha
          and sorted(lcfg.target_modules) == sorted(TARGETS),
          f"r={lcfg.r} lora_alpha={lcfg.lora_alpha} target_modules={sorted(lcfg.target_modules)} "
          f"peft_type={lcfg.peft_type} task_type={lcfg.task_type}")
    fresh = get_peft_model(LlamaForCausalLM.from_pretrained(base), LoraConfig(
        r=r, lora_alpha=alpha, target_modules=TARGETS, task_type="CAUSAL_LM"))
    want = {k: tuple(v.shape) for k, v in get_peft_model_state_dict(fresh).items()}
    ours = load_file(st)
    got = {k: tuple(v.shape) for k, v in ours.items()}
    diff = sorted(set(want.items()) ^ set(got.items()))
    check("tensor_names", not diff,
          f"{len(got)} tensors; same names and shapes as PEFT's own save" if not diff
          else f"differences (name, shape): {diff[:6]}")

    base_model = LlamaForCausalLM.from_pretrained(base)
    model = PeftModel.from_pretrained(base_model, adapter)
    model.eval()
    load = set_peft_model_state_dict(model, ours)
    missing = [k for k in load.missing_keys if "lora_" in k]
    check("load_keys", not missing and not load.unexpected_keys,
          f"missing LoRA keys {missing[:4]}, unexpected keys {list(load.unexpected_keys)[:4]}")
    # Reload from scratch for the value check, so it sees what from_pretrained alone loaded.
    model = PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(base), adapter)
    model.eval()
    held = {k.replace(".default", ""): v for k, v in model.state_dict().items() if "lora_" in k}
    mism = [k for k, v in ours.items() if k not in held or not torch.equal(held[k], v)]
    b_norm = max(float(v.abs().max()) for k, v in ours.items() if "lora_B" in k)
    check("weights_equal", not mism and len(held) == len(ours),
          f"{len(ours)} LoRA tensors held by PEFT equal the file bit for bit; max |lora_B| = {b_norm:.4g}"
          if not mism else f"differ: {mism[:4]}")

    rows, masks = fixtures.tokenize(base, data, seq)
    peft_loss, peft_tokens = peft_mean_loss(model, rows, masks, batch)
    base_loss, _ = peft_mean_loss(LlamaForCausalLM.from_pretrained(base).eval(), rows, masks, batch)
    ev = json.loads(sh([tp, "eval", "--base", base, "--adapter", adapter, "--data", data,
                        "--seq-len", str(seq), "--batch-size", str(batch), "--json"]))
    ev_base = json.loads(sh([tp, "eval", "--base", base, "--data", data, "--seq-len", str(seq),
                             "--batch-size", str(batch), "--json"]))
    d = abs(ev["mean_loss"] - peft_loss)
    check("loss_adapter", d <= args.tol and ev["tokens"] == peft_tokens,
          f"trainprov eval {ev['mean_loss']:.7f} vs PEFT {peft_loss:.7f} (|diff| {d:.2e}, tol "
          f"{args.tol:g}), {ev['tokens']} vs {peft_tokens} tokens")
    db = abs(ev_base["mean_loss"] - base_loss)
    check("loss_base", db <= args.tol,
          f"trainprov eval {ev_base['mean_loss']:.7f} vs transformers {base_loss:.7f} (|diff| {db:.2e})")
    moved = abs(peft_loss - base_loss)
    check("adapter_matters", moved > 100 * args.tol,
          f"the adapter moves the loss by {moved:.4f} ({base_loss:.4f} -> {peft_loss:.4f})")

    results["pass"] = not failures
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(results, f, indent=1)
    if failures:
        print("FAIL: " + ", ".join(failures))
        sys.exit(1)
    print(f"PASS: PEFT {peft.__version__} loads trainprov's adapter ({len(ours)} tensors, "
          f"bit-identical) and gets the same mean loss (|diff| {d:.1e})")


if __name__ == "__main__":
    main()
