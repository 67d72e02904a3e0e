#!/usr/bin/env python3
"""Writes init/: the untrained starting point of the tiny-llama base model (standard library only).

- init/tokenizer.json: a character-level tokenizer in the Hugging Face `tokenizers` format (a BPE
  model without merges over every character of the corpus, plus <pad>, <s>, </s>, <unk>);
- init/config.json: a Llama config (2 layers, hidden 128, 4 heads, 2 KV heads, SwiGLU 352).

There are no weights here: `trainprov train pretrain.toml` draws them from its own seeded
generator (`init = "random"`) and trains every one of them (mode = "full") into base/.
    python3 examples/tiny-llama/make_init.py
"""
import json
import os

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

print(f"vocab {VOCAB}")
