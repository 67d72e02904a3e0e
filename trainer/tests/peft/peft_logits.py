#!/usr/bin/env python3
"""PEFT 0.10.0 side of `trainer/tests/peft_families.rs`: load a trainprov LoRA adapter onto a
family fixture's base with `PeftModel.from_pretrained` and write the logits PEFT computes.

    python peft_logits.py BASE_DIR ADAPTER_DIR INPUT_IDS_JSON EXPECTED_BASE_LOGITS OUT_DIR

Writes OUT_DIR/logits.safetensors (F32 "base" and "adapted", [batch, seq, vocab]) and
OUT_DIR/report.json with the checks below; exits 1 on a failed check, naming it.

Checks (each is a key of report.json with "ok" and "detail"):
  base_matches_fixture  the base loaded here gives the fixture's expected logits (from the real
                        transformers, see tests/fixtures/families/README.md) to 1e-4: proves the
                        loader below is the same model before PEFT touches it;
  tensor_names          the adapter file's tensor names and shapes are exactly those PEFT itself
                        saves (`get_peft_model_state_dict` of `get_peft_model` on the same base
                        with the adapter's own LoraConfig);
  load_keys             `set_peft_model_state_dict` reports no unexpected key and no missing
                        LoRA key;
  weights_equal         every LoRA weight PEFT holds after from_pretrained equals the file's.

The CI venv has transformers 4.38.2 (scripts/torch-venv.sh), which lacks two things the
fixtures use; this script supplies them and `base_matches_fixture` checks the result:
  - Llama 3.1's `llama3` RoPE scaling (transformers >= 4.43): the config is loaded without it
    and each layer's `rotary_emb.inv_freq` is replaced by the scaled frequencies
    (`_compute_llama3_parameters` of transformers 4.51.3, modeling_rope_utils.py);
  - Qwen3 (transformers >= 4.51): `Qwen2ForCausalLM` with each attention replaced by
    `Qwen3Attention` below, ported from transformers 4.51.3 models/qwen3/modeling_qwen3.py
    (per-head q_norm / k_norm before RoPE, explicit head_dim, no biases).
"""
import json
import math
import os
import sys

import torch
from torch import nn

TOL = 1e-4


def llama3_inv_freq(cfg):
    """transformers 4.51.3 `_compute_llama3_parameters`."""
    rs = cfg["rope_scaling"]
    dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    base = cfg["rope_theta"]
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    factor, low, high = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
    old = rs["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old / low, old / high
    wavelen = 2 * math.pi / inv_freq
    out = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (old / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * out / factor + smooth * out
    medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
    return torch.where(medium, smoothed, out)


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


class Qwen3Attention(nn.Module):
    """transformers 4.51.3 `Qwen3Attention` (eager, no cache), in torch 1.13."""

    def __init__(self, cfg):
        super().__init__()
        from transformers.models.qwen2.modeling_qwen2 import Qwen2RMSNorm
        self.hd = cfg["head_dim"]
        self.nh = cfg["num_attention_heads"]
        self.nkv = cfg["num_key_value_heads"]
        h = cfg["hidden_size"]
        bias = cfg.get("attention_bias", False)
        self.q_proj = nn.Linear(h, self.nh * self.hd, bias=bias)
        self.k_proj = nn.Linear(h, self.nkv * self.hd, bias=bias)
        self.v_proj = nn.Linear(h, self.nkv * self.hd, bias=bias)
        self.o_proj = nn.Linear(self.nh * self.hd, h, bias=bias)
        self.q_norm = Qwen2RMSNorm(self.hd, eps=cfg["rms_norm_eps"])
        self.k_norm = Qwen2RMSNorm(self.hd, eps=cfg["rms_norm_eps"])
        inv = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, self.hd, 2, dtype=torch.int64).float() / self.hd))
        self.register_buffer("inv_freq", inv, persistent=False)

    def forward(self, hidden_states, attention_mask=None, position_ids=None, past_key_value=None,
                output_attentions=False, use_cache=False, **kwargs):
        b, t, _ = hidden_states.shape
        shape = (b, t, -1, self.hd)
        q = self.q_norm(self.q_proj(hidden_states).view(shape)).transpose(1, 2)
        k = self.k_norm(self.k_proj(hidden_states).view(shape)).transpose(1, 2)
        v = self.v_proj(hidden_states).view(shape).transpose(1, 2)
        freqs = position_ids[:, :, None].float() * self.inv_freq[None, None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos()[:, None], emb.sin()[:, None]
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(self.nh // self.nkv, dim=1)
        v = v.repeat_interleave(self.nh // self.nkv, dim=1)
        w = torch.matmul(q, k.transpose(2, 3)) * self.hd ** -0.5
        if attention_mask is not None:
            w = w + attention_mask
        w = nn.functional.softmax(w, dim=-1, dtype=torch.float32).to(q.dtype)
        out = torch.matmul(w, v).transpose(1, 2).reshape(b, t, -1)
        return self.o_proj(out), None, past_key_value


def load_base(base):
    import transformers
    from safetensors.torch import load_file
    with open(os.path.join(base, "config.json")) as f:
        cfg = json.load(f)
    mt = cfg["model_type"]
    if mt == "llama" and (cfg.get("rope_scaling") or {}).get("rope_type") == "llama3":
        d = dict(cfg)
        d.pop("rope_scaling")
        config = transformers.LlamaConfig(**d)
        model = transformers.LlamaForCausalLM.from_pretrained(base, config=config)
        inv = llama3_inv_freq(cfg)
        for layer in model.model.layers:
            layer.self_attn.rotary_emb.inv_freq.copy_(inv)
        return model
    if mt == "qwen3":
        d = {k: v for k, v in cfg.items() if k not in ("model_type", "architectures", "head_dim")}
        config = transformers.Qwen2Config(**d)
        config._attn_implementation = "eager"
        model = transformers.Qwen2ForCausalLM(config)
        for layer in model.model.layers:
            layer.self_attn = Qwen3Attention(cfg)
        state = load_file(os.path.join(base, "model.safetensors"))
        res = model.load_state_dict(state, strict=False)
        assert not res.unexpected_keys, res.unexpected_keys
        assert set(res.missing_keys) <= {"lm_head.weight"}, res.missing_keys
        model.tie_weights()
        return model
    return transformers.AutoModelForCausalLM.from_pretrained(base, attn_implementation="eager")


def main():
    base, adapter, ids_file, expected_file, out = sys.argv[1:6]
    import peft
    from peft import LoraConfig, PeftModel, get_peft_model
    from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    torch.set_num_threads(1)
    os.makedirs(out, exist_ok=True)
    with open(ids_file) as f:
        ids = torch.tensor(json.load(f), dtype=torch.long)
    report, failures = {"peft": peft.__version__}, []

    def check(name, ok, detail):
        report[name] = {"ok": bool(ok), "detail": detail}
        if not ok:
            failures.append(f"{name}: {detail}")

    base_model = load_base(base).eval()
    with torch.no_grad():
        base_logits = base_model(input_ids=ids).logits.float()
    expected = load_file(expected_file)["logits"]
    d = float((base_logits - expected).abs().max())
    check("base_matches_fixture", d < TOL, f"max |loader - fixture| = {d:.2e}")

    st = os.path.join(adapter, "adapter_model.safetensors")
    ours = load_file(st)
    lcfg = LoraConfig.from_pretrained(adapter)
    fresh = get_peft_model(load_base(base), lcfg)
    want = {k: tuple(v.shape) for k, v in get_peft_model_state_dict(fresh).items()}
    got = {k: tuple(v.shape) for k, v in ours.items()}
    diff = sorted(set(want.items()) ^ set(got.items()))
    check("tensor_names", not diff, f"{len(got)} tensors" if not diff else f"differ: {diff[:6]}")

    model = PeftModel.from_pretrained(load_base(base), adapter).eval()
    held = {k.replace(".default", ""): v for k, v in model.state_dict().items() if "lora_" in k}
    mism = [k for k, v in ours.items() if k not in held or not torch.equal(held[k], v)]
    check("weights_equal", not mism and len(held) == len(ours),
          f"{len(held)} held, {len(ours)} in file, differing {mism[:4]}")
    probe = PeftModel.from_pretrained(load_base(base), adapter)
    res = set_peft_model_state_dict(probe, ours)
    missing = [k for k in res.missing_keys if "lora_" in k]
    check("load_keys", not missing and not res.unexpected_keys,
          f"missing {missing[:4]}, unexpected {list(res.unexpected_keys)[:4]}")

    with torch.no_grad():
        adapted = model(input_ids=ids).logits.float()
    save_file({"base": base_logits.contiguous(), "adapted": adapted.contiguous()},
              os.path.join(out, "logits.safetensors"))
    with open(os.path.join(out, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    if failures:
        print("FAIL: " + "; ".join(failures))
        sys.exit(1)
    print("ok: " + json.dumps(report))


if __name__ == "__main__":
    main()
