"""Hugging Face models built from configs (no downloads): patched outputs and gradients match."""
from __future__ import annotations

import pytest
import torch

import tritonpatch

transformers = pytest.importorskip("transformers")

TOL = 2e-5  # fp32 end to end, relative, patched vs unpatched (each kernel is within 1e-6)


def build(name: str, attn: str = "eager"):
    t = transformers
    small = dict(num_attention_heads=2)
    if name == "bert":
        cfg = t.BertConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, vocab_size=99,
                           hidden_act="relu", **small)
        return t.BertModel._from_config(cfg, attn_implementation=attn), "ids"
    if name == "opt":
        cfg = t.OPTConfig(hidden_size=32, ffn_dim=64, num_hidden_layers=2, vocab_size=99,
                          word_embed_proj_dim=32, max_position_embeddings=64, activation_function="relu", **small)
        return t.OPTForCausalLM._from_config(cfg, attn_implementation=attn), "ids"
    if name == "gpt2":
        cfg = t.GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=99, n_positions=64)
        return t.GPT2LMHeadModel._from_config(cfg, attn_implementation=attn), "ids"
    if name == "t5":
        cfg = t.T5Config(d_model=32, d_ff=64, num_layers=2, num_heads=2, d_kv=16, vocab_size=99)
        return t.T5ForConditionalGeneration._from_config(cfg, attn_implementation=attn), "t5"
    if name == "vit":
        cfg = t.ViTConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, image_size=16,
                          patch_size=8, hidden_act="relu", **small)
        return t.ViTModel._from_config(cfg, attn_implementation=attn), "pixels"
    raise ValueError(name)


def inputs(kind: str, device: str) -> dict:
    if kind == "pixels":
        return {"pixel_values": torch.randn(2, 3, 16, 16, device=device)}
    ids = torch.randint(0, 99, (2, 7), device=device)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0  # padding: masked scores go through the softmax
    if kind == "t5":
        return {"input_ids": ids, "attention_mask": mask, "decoder_input_ids": ids[:, :4]}
    return {"input_ids": ids, "attention_mask": mask}


EXPECT = {  # kinds each model must route to Triton
    "bert": {"layer_norm", "softmax", "linear_relu"},
    "opt": {"layer_norm", "softmax", "linear_relu"},
    "gpt2": {"layer_norm", "softmax"},
    "t5": {"softmax", "linear_relu"},
    "vit": {"layer_norm", "softmax", "linear_relu"},
}


@pytest.mark.parametrize("name", sorted(EXPECT))
def test_eager_model_matches(name, device):
    torch.manual_seed(0)
    model, kind = build(name)
    model = model.to(device).train()  # dropout on: compare() replays the RNG
    batch = inputs(kind, device)
    with tritonpatch.patch(model) as p:
        c = tritonpatch.compare(model, backward=True, **batch)
        model(**batch)
    assert c.max_rel_error < TOL, str(c)
    assert c.grad_rel_error is not None and c.grad_rel_error < 10 * TOL, str(c)
    ran = {r.kind for r in p.layers if r.triton_calls > 0}
    assert ran == EXPECT[name], str(p)
    assert all(r.fallback_calls == 0 for r in p.layers), str(p)
    assert all(row.triton_calls == row.calls > 0 for row in c.layers), str(c)


def test_sdpa_routes_no_softmax_and_says_so(device):
    model, kind = build("bert", attn="sdpa")
    model = model.to(device).eval()
    with tritonpatch.patch(model) as p:
        model(**inputs(kind, device))
    assert not [r for r in p.layers if r.kind == "softmax"]
    assert "attn_implementation" in str(p) and "'sdpa'" in str(p)
