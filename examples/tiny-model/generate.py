#!/usr/bin/env python3
"""Generates the embedded example model directory deterministically (standard library only).

A Llama-shaped toy checkpoint: config.json plus model.safetensors holding seeded float32
tensors. It is tiny on purpose (about 200 KB) and exists to be signed and verified; the trained
tiny-llama base model arrives with the trainer. It writes into model/ beside this script:
    python3 examples/tiny-model/generate.py
"""
import json
import os
import random
import struct

HIDDEN, LAYERS, VOCAB, INTER = 32, 2, 256, 64
SEED = 20261121


def tensors():
    rng = random.Random(SEED)
    shapes = {"model.embed_tokens.weight": [VOCAB, HIDDEN], "model.norm.weight": [HIDDEN]}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            shapes[p + f"self_attn.{name}.weight"] = [HIDDEN, HIDDEN]
        shapes[p + "mlp.gate_proj.weight"] = [INTER, HIDDEN]
        shapes[p + "mlp.up_proj.weight"] = [INTER, HIDDEN]
        shapes[p + "mlp.down_proj.weight"] = [HIDDEN, INTER]
        shapes[p + "input_layernorm.weight"] = [HIDDEN]
        shapes[p + "post_attention_layernorm.weight"] = [HIDDEN]
    for name in sorted(shapes):
        count = 1
        for d in shapes[name]:
            count *= d
        values = [1.0] * count if name.endswith("norm.weight") else [rng.gauss(0.0, 0.02) for _ in range(count)]
        yield name, shapes[name], struct.pack(f"<{count}f", *values)


def write_safetensors(path):
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, shape, data in tensors():
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # align the data section to 8 bytes
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


config = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": HIDDEN,
    "intermediate_size": INTER, "num_hidden_layers": LAYERS, "num_attention_heads": 4,
    "num_key_value_heads": 2, "vocab_size": VOCAB, "max_position_embeddings": 128,
    "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "torch_dtype": "float32",
}
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "model")
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, "config.json"), "w") as f:
    json.dump(config, f, indent=2, sort_keys=True)
    f.write("\n")
write_safetensors(os.path.join(out, "model.safetensors"))
