"""Patch a Hugging Face model in one line, see what ran on Triton, compare numerics, and time it.

    python examples/patch_hf_model.py            # OPT-350m-like on a GPU; a tiny OPT on a CPU
    python examples/patch_hf_model.py --tiny     # the tiny model anywhere

The model is built from a config (no download): OPT with ReLU FFNs, LayerNorms and eager attention,
so all three patched kinds (LayerNorm, softmax, Linear+ReLU) occur. On a machine without a GPU the
kernels cannot run and every call falls back to PyTorch, with the reason in the report; set
TRITON_INTERPRET=1 to run the real kernels through Triton's CPU interpreter (slow, tiny sizes only).
"""
from __future__ import annotations

import argparse
import logging
import os
import time

import torch
from transformers import OPTConfig, OPTForCausalLM

import tritonpatch


def build(tiny: bool, device: str, dtype: torch.dtype) -> OPTForCausalLM:
    if tiny:
        config = OPTConfig(hidden_size=64, ffn_dim=256, num_hidden_layers=2, num_attention_heads=4,
                           vocab_size=512, max_position_embeddings=128, word_embed_proj_dim=64,
                           activation_function="relu")
    else:  # OPT-350m's shape: 24 layers, d=1024, ffn 4096, 16 heads
        config = OPTConfig(hidden_size=1024, ffn_dim=4096, num_hidden_layers=24, num_attention_heads=16,
                           word_embed_proj_dim=512, activation_function="relu",
                           do_layer_norm_before=False)
    model = OPTForCausalLM._from_config(config, attn_implementation="eager")
    return model.to(device=device, dtype=dtype).eval()


def timed(fn, device: str, repeat: int) -> float:
    """Median wall time of fn() in ms (synchronising the GPU around each call)."""
    times = []
    for _ in range(repeat):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a 2-layer model (the default without a GPU)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the report below says what fell back, and why

    cuda = torch.cuda.is_available()
    interpret = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
    device = "cuda" if cuda and not interpret else "cpu"
    tiny = args.tiny or device == "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.manual_seed(0)
    model = build(tiny, device, dtype)
    batch, seq = (2, 16) if tiny else (8, 512)
    ids = torch.randint(0, model.config.vocab_size, (batch, seq), device=device)

    with torch.no_grad():
        with tritonpatch.patch(model) as p:  # the one line
            model(ids)
    print(p)
    if device == "cpu" and not interpret:
        print("\nNo GPU here: the kernels fell back to PyTorch (see the reasons above). To run them on the "
              "CPU through Triton's interpreter:\n  TRITON_INTERPRET=1 python examples/patch_hf_model.py")

    print("\ncompare(): unpatched vs patched, per layer")
    with torch.no_grad():
        print(tritonpatch.compare(model, ids))

    repeat = 3 if tiny else 20
    with torch.no_grad():
        model(ids)  # warm-up
        base = timed(lambda: model(ids), device, repeat)
        with tritonpatch.patch(model):
            model(ids)  # warm-up (compiles the kernels)
            patched = timed(lambda: model(ids), device, repeat)
    print(f"\nforward, {batch}x{seq} tokens on {device}: unpatched {base:.2f} ms, patched {patched:.2f} ms "
          f"({base / patched:.2f}x)")


if __name__ == "__main__":
    main()
