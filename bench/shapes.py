"""The model the file benchmarks load: transformer-like float32 shapes
(bench_files.py, bench_remote.py)."""

import math

LAYERS = 16


def shapes_for(total_bytes):
    """Transformer-like float32 shapes (about 200 tensors) summing to about
    |total_bytes|: 16 layers of q/k/v/o (+ biases), gate/up/down, two norms;
    an embedding, a final norm and an LM head take the rest."""
    d = max(64, int(round(1024 * math.sqrt(total_bytes / (1 << 30)) / 64)) * 64)
    ffn = max(64, int(round(2.75 * d / 64)) * 64)
    per_layer = 4 * d * d + 3 * d * ffn + 5 * d
    rest = total_bytes // 4 - LAYERS * per_layer - d
    vocab = max(64, rest // (2 * d))
    out = [("model.embed_tokens.weight", (vocab, d))]
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        out += [(p + "input_layernorm.weight", (d,))]
        for n in "qkv":
            out += [(p + f"self_attn.{n}_proj.weight", (d, d)),
                    (p + f"self_attn.{n}_proj.bias", (d,))]
        out += [(p + "self_attn.o_proj.weight", (d, d)),
                (p + "post_attention_layernorm.weight", (d,)),
                (p + "mlp.gate_proj.weight", (ffn, d)),
                (p + "mlp.up_proj.weight", (ffn, d)),
                (p + "mlp.down_proj.weight", (d, ffn))]
    out += [("model.norm.weight", (d,)), ("lm_head.weight", (vocab, d))]
    return out
