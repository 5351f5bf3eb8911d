"""A tiny random Llama as a Hugging Face folder, written without importing torch.

For tests of the serving engine that need real batching and a generation that runs long, not
a good answer: 1 layer, hidden size 16, a byte-level vocabulary. Its EOS token id lies outside
the model's output vocabulary, so every generation runs to ``max_tokens``: a test can tell a
request that was dropped from one that finished. Written with numpy and safetensors in well
under a second; the server that loads it still pays for importing torch.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

HIDDEN, INTERMEDIATE, HEADS, KV_HEADS = 16, 32, 2, 1
CONTEXT = 8192


def write_tiny_model(folder: Path, seed: int = 0) -> Path:
    from safetensors.numpy import save_file
    from tokenizers import pre_tokenizers

    folder.mkdir(parents=True, exist_ok=True)
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {"<pad>": 0, **{c: i + 1 for i, c in enumerate(alphabet)}}
    n_vocab, eos = len(vocab), len(vocab)  # eos: a tokenizer-only id the model never emits
    head = HIDDEN // HEADS
    rng = np.random.default_rng(seed)

    def weight(*shape: int) -> np.ndarray:
        return rng.normal(0.0, 0.5, shape).astype(np.float32)

    layer = "model.layers.0."
    tensors = {
        "model.embed_tokens.weight": weight(n_vocab, HIDDEN),
        "lm_head.weight": weight(n_vocab, HIDDEN),
        "model.norm.weight": np.ones(HIDDEN, np.float32),
        layer + "input_layernorm.weight": np.ones(HIDDEN, np.float32),
        layer + "post_attention_layernorm.weight": np.ones(HIDDEN, np.float32),
        layer + "self_attn.q_proj.weight": weight(HIDDEN, HIDDEN),
        layer + "self_attn.k_proj.weight": weight(KV_HEADS * head, HIDDEN),
        layer + "self_attn.v_proj.weight": weight(KV_HEADS * head, HIDDEN),
        layer + "self_attn.o_proj.weight": weight(HIDDEN, HIDDEN),
        layer + "mlp.gate_proj.weight": weight(INTERMEDIATE, HIDDEN),
        layer + "mlp.up_proj.weight": weight(INTERMEDIATE, HIDDEN),
        layer + "mlp.down_proj.weight": weight(HIDDEN, INTERMEDIATE),
    }
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": n_vocab,
        "hidden_size": HIDDEN,
        "intermediate_size": INTERMEDIATE,
        "num_hidden_layers": 1,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "head_dim": head,
        "hidden_act": "silu",
        "max_position_embeddings": CONTEXT,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False,
        "pad_token_id": 0,
        "eos_token_id": eos,
        "dtype": "float32",
    }
    _write(folder / "config.json", config)
    _write(folder / "generation_config.json", {"eos_token_id": eos, "pad_token_id": 0})
    special = [
        {"id": i, "content": text, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True}
        for i, text in ((0, "<pad>"), (eos, "<eos>"))
    ]  # fmt: skip
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    _write(
        folder / "tokenizer.json",
        {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": special,
            "normalizer": None,
            "pre_tokenizer": byte_level,
            "post_processor": None,
            "decoder": byte_level,
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                      "ignore_merges": False, "vocab": vocab, "merges": []},
        },
    )  # fmt: skip
    _write(
        folder / "tokenizer_config.json",
        {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "eos_token": "<eos>",
            "pad_token": "<pad>",
            "chat_template": "{% for m in messages %}{{ m['content'] }}\n{% endfor %}",
        },
    )
    return folder


def _write(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=1) + "\n")
