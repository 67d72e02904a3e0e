#!/usr/bin/env python3
"""Writes init/: the untrained starting point of the tiny-llama base model (standard library only).

- init/tokenizer.json: a character-level tokenizer in the Hugging Face `tokenizers` format (a BPE
  model without merges over every character of the corpus, plus <pad>, <s>, </s>, <unk>);
- init/config.json: a Llama config (2 layers, hidden 128, 4 heads, 2 KV heads, SwiGLU 352);
- init/model.safetensors: weights drawn from a seeded normal(0, 0.02) (norms = 1), the usual
  Llama initialisation, in float32.

`trainprov train pretrain.toml` then trains every weight (mode = "full") into base/.
    python3 examples/tiny-llama/make_init.py
"""
import json
import os
import random
import struct

here = os.path.dirname(os.path.abspath(__file__))
out = os.path.join(here, "init")
os.makedirs(out, exist_ok=True)

chars = set()
for folder in ("corpus", "data"):
    for name in sorted(os.listdir(os.path.join(here, folder))):
        with open(os.path.join(here, folder, name)) as f:
            for line in f:
                for value in json.loads(line).values():
                    chars.update(value)
specials = ["<pad>", "<s>", "</s>", "<unk>"]
vocab = {tok: i for i, tok in enumerate(specials)}
for ch in sorted(chars):
    vocab[ch] = len(vocab)
tokenizer = {
    "version": "1.0",
    "truncation": None,
    "padding": None,
    "added_tokens": [
        {"id": i, "content": tok, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True}
        for i, tok in enumerate(specials)
    ],
    "normalizer": None,
    "pre_tokenizer": None,
    "post_processor": None,
    "decoder": None,
    "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
              "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
              "vocab": vocab, "merges": []},
}
with open(os.path.join(out, "tokenizer.json"), "w") as f:
    json.dump(tokenizer, f, indent=1, sort_keys=True, ensure_ascii=False)
    f.write("\n")

HIDDEN, INTER, LAYERS, HEADS, KV = 128, 352, 2, 4, 2
VOCAB = len(vocab)
HEAD_DIM = HIDDEN // HEADS
config = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": HIDDEN,
    "intermediate_size": INTER, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
    "num_key_value_heads": KV, "vocab_size": VOCAB, "max_position_embeddings": 128,
    "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": False,
    "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "torch_dtype": "float32",
}
with open(os.path.join(out, "config.json"), "w") as f:
    json.dump(config, f, indent=2, sort_keys=True)
    f.write("\n")

rng = random.Random(20261121)
shapes = {"model.embed_tokens.weight": [VOCAB, HIDDEN], "model.norm.weight": [HIDDEN],
          "lm_head.weight": [VOCAB, HIDDEN]}
for i in range(LAYERS):
    p = f"model.layers.{i}."
    shapes[p + "self_attn.q_proj.weight"] = [HEADS * HEAD_DIM, HIDDEN]
    shapes[p + "self_attn.k_proj.weight"] = [KV * HEAD_DIM, HIDDEN]
    shapes[p + "self_attn.v_proj.weight"] = [KV * HEAD_DIM, HIDDEN]
    shapes[p + "self_attn.o_proj.weight"] = [HIDDEN, HEADS * HEAD_DIM]
    shapes[p + "mlp.gate_proj.weight"] = [INTER, HIDDEN]
    shapes[p + "mlp.up_proj.weight"] = [INTER, HIDDEN]
    shapes[p + "mlp.down_proj.weight"] = [HIDDEN, INTER]
    shapes[p + "input_layernorm.weight"] = [HIDDEN]
    shapes[p + "post_attention_layernorm.weight"] = [HIDDEN]
header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
for name in sorted(shapes):
    count = 1
    for d in shapes[name]:
        count *= d
    values = [1.0] * count if name.endswith("norm.weight") else [rng.gauss(0.0, 0.02) for _ in range(count)]
    data = struct.pack(f"<{count}f", *values)
    header[name] = {"dtype": "F32", "shape": shapes[name], "data_offsets": [offset, offset + len(data)]}
    blobs.append(data)
    offset += len(data)
text = json.dumps(header, separators=(",", ":")).encode()
text += b" " * (-len(text) % 8)
with open(os.path.join(out, "model.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))
print(f"vocab {VOCAB}, {offset // 4} parameters")
