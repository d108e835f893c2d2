"""Train a patched model under DDP and FSDP2 exactly as unpatched: losses, parameters, speed, memory.

    torchrun --nproc-per-node 2 examples/distributed_train.py                  # 2 GPUs, NCCL, OPT-350m-like, bf16
    torchrun --nproc-per-node 2 examples/distributed_train.py --backend gloo --tiny   # CPU (CI)

For each engine (DDP, FSDP2 ``fully_shard`` per decoder layer and at the root) it trains the same model
from the same initial weights on the same batches, once unpatched and once patched, and reports per-step
losses, the largest relative difference of the final parameters, tokens/s and peak memory per GPU. Rank
0 prints a markdown table. NVLink multicast stays off (``NCCL_NVLS_ENABLE=0``). On CPU the kernels fall
back to PyTorch unless ``TRITON_INTERPRET=1`` runs them through Triton's interpreter.
"""
from __future__ import annotations

import argparse
import copy
import os
import time

os.environ.setdefault("NCCL_NVLS_ENABLE", "0")

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from transformers import OPTConfig, OPTForCausalLM  # noqa: E402

import tritonpatch  # noqa: E402


def build(tiny: bool) -> OPTForCausalLM:
    if tiny:
        cfg = OPTConfig(hidden_size=64, ffn_dim=256, num_hidden_layers=2, num_attention_heads=4, vocab_size=512,
                        max_position_embeddings=128, word_embed_proj_dim=64, activation_function="relu",
                        dropout=0.0, attention_dropout=0.0)
    else:
        cfg = OPTConfig(hidden_size=1024, ffn_dim=4096, num_hidden_layers=24, num_attention_heads=16,
                        word_embed_proj_dim=512, activation_function="relu", do_layer_norm_before=False,
                        dropout=0.0, attention_dropout=0.0)
    return OPTForCausalLM._from_config(cfg, attn_implementation="eager")


def wrap(model: torch.nn.Module, engine: str, device: torch.device) -> torch.nn.Module:
    if engine == "ddp":
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    # an explicit mesh on the training device: on a machine that has a GPU, gloo training on the CPU
    # must not let FSDP2 pick cuda:<rank> by default
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    for layer in model.model.decoder.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def train(base: torch.nn.Module, engine: str, patched: bool, args, device: torch.device) -> dict:
    model = copy.deepcopy(base).to(device)
    wrapped = wrap(model, engine, device)
    opt = torch.optim.AdamW(wrapped.parameters(), lr=1e-4)
    handle = tritonpatch.patch(wrapped) if patched else None
    gen = torch.Generator().manual_seed(1234 + dist.get_rank())
    vocab = model.config.vocab_size
    batches = [torch.randint(0, vocab, (args.batch, args.seq), generator=gen).to(device) for _ in range(args.steps)]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        torch.cuda.synchronize(device)
    losses, t0 = [], time.perf_counter()
    for ids in batches:
        loss = wrapped(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.detach().float())
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    report = str(handle) if handle is not None else ""
    if handle is not None:
        handle.unpatch()
    params = {n: (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().float().cpu()
              for n, p in model.named_parameters()}
    return {"losses": torch.stack(losses).cpu(), "params": params, "report": report,
            "tokens_per_s": args.steps * args.batch * args.seq * dist.get_world_size() / seconds,
            "peak_mib": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="nccl", choices=["nccl", "gloo"])
    ap.add_argument("--engines", default="ddp,fsdp2")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--tiny", action="store_true", help="a 2-layer fp32 model, small batches (CPU, CI)")
    args = ap.parse_args()
    if args.tiny:
        args.steps, args.batch, args.seq = min(args.steps, 3), 2, 16
    dist.init_process_group(args.backend)
    rank = dist.get_rank()
    if args.backend == "nccl":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    dtype = torch.float32 if args.tiny else torch.bfloat16
    torch.manual_seed(0)
    base = build(args.tiny).to(dtype)
    # bf16 end to end differs by rounding order only; fp32 (tiny) must agree to 1e-5.
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    ok, rows = True, []
    for engine in args.engines.split(","):
        ref = train(base, engine, False, args, device)
        got = train(base, engine, True, args, device)
        loss_err = ((got["losses"] - ref["losses"]).abs() / ref["losses"].abs()).max().item()
        # One norm over all parameters: Adam moves a parameter whose gradient is ~0 (a zero-initialised
        # bias, say) by about lr * sign(noise), so a per-tensor relative difference can be all noise.
        diff = torch.cat([(got["params"][n] - p).flatten() for n, p in ref["params"].items()])
        total = torch.cat([p.flatten() for p in ref["params"].values()])
        param_err = (diff.norm() / total.norm()).item()
        passed = loss_err <= tol and param_err <= tol
        ok &= passed
        rows.append((engine, loss_err, param_err, ref, got, passed))
        if rank == 0:
            print(got["report"].splitlines()[0] if got["report"] else "")
    if rank == 0:
        print(f"\nbackend {args.backend}, world {dist.get_world_size()}, {dtype}, {args.steps} steps of "
              f"{args.batch}x{args.seq} tokens per rank")
        print("| engine | max rel loss diff | rel param diff | tokens/s unpatched | tokens/s patched | "
              "peak MiB unpatched | peak MiB patched | match |")
        print("|---|---|---|---|---|---|---|---|")
        for engine, le, pe, ref, got, passed in rows:
            print(f"| {engine} | {le:.2e} | {pe:.2e} | {ref['tokens_per_s']:.0f} | {got['tokens_per_s']:.0f} | "
                  f"{ref['peak_mib']:.0f} | {got['peak_mib']:.0f} | {'yes' if passed else 'NO'} |")
        print("losses match" if ok else "LOSSES DIFFER")
    dist.barrier()  # no rank tears the process group down while another still uses it
    dist.destroy_process_group()
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
