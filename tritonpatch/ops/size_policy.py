"""Where PyTorch is faster: the sizes below which a patched call falls back, with the reason
``"torch is faster at this size"``.

A patched call costs more CPU than torch's own op (Python dispatch, a Triton launch, and in training a
Python autograd node), and saves GPU time in proportion to the bytes it moves. So Triton wins from a
size up, and that size is larger in training (the autograd node's CPU cost comes on top).

Measured on an NVIDIA H200 host, 2026-11-30 (torch 2.11, triton 3.6), by ``benchmarks/crossover.py``
after the launch-plan caches (``benchmarks/results_2026-11-30/crossover.txt``): patched vs unpatched
modules called back to back, one sync per 50 calls, so CPU time counts as much as GPU time, as in a
launch-bound model (ratios torch / patched):

* LayerNorm forward: bf16 16384x1024 and 4096x4096 (32 MiB) 1.44 / 1.32, 1024x4096 (8 MiB) 0.96,
  4096x1024 (8 MiB) 0.58; fp32 4096x1024 (16 MiB) 0.64, 16384x1024 / 4096x4096 (64 MiB) 1.47 / 1.39.
  Forward+backward: bf16 32 MiB 0.51-0.67, 16384x4096 (128 MiB) 1.47; fp32 64 MiB 0.81-0.91,
  16384x4096 (256 MiB) 1.50.
* softmax forward: bf16 32 MiB 1.45 / 1.66, 8 MiB 0.39-0.64; fp32 16 MiB 0.51, 64 MiB 1.06 / 1.38.
  Forward+backward: bf16 32 MiB 0.54 / 0.64, 128 MiB 1.88; fp32 64 MiB 0.96 / 1.17, 256 MiB 1.51.
* Linear+ReLU (bf16, cuBLASLt epilogue), forward: 8192x768->3072 (38.7 GFLOP) 1.10, 8192x1024->4096
  (68.7 GFLOP) 1.23, 8192x4096->1024 1.00; every shape of 2048 rows or fewer (<= 17.2 GFLOP) 0.58-0.90.
  Forward+backward: 0.55-0.86 at every shape up to 8192 rows (68.7 GFLOP); the training threshold
  stays at the H100's measurement (16384x1024->4096, 137 GFLOP: 1.07; H100 80GB HBM3, 2026-11-26).

The H100 (2026-11-26, before the plan caches) had the LayerNorm and softmax forward thresholds at
64 MiB: its patched calls cost more CPU then.

Thresholds (the input's bytes for LayerNorm and softmax, forward FLOPs 2*M*N*K for Linear+ReLU) sit at
the first size that won for every shape measured there. Off under the interpreter and with
``TRITONPATCH_SIZE_POLICY=0`` (see :func:`tritonpatch.ops.common.size_policy_on`).

Not while the current CUDA stream is capturing a CUDA graph (``torch.cuda.graph``,
``torch.cuda.make_graphed_callables``; captures are counted cheaply by
:mod:`tritonpatch.patching.capture_watch`): a replay costs no host time per call, so only GPU time counts,
and there the kernels won at every size measured. CUDA graphs of 20 calls, replayed, torch / tritonpatch
GPU time per call (NVIDIA H200, torch 2.11, triton 3.6, 2026-12-01, ``benchmarks/probe_graph_capture.py``,
``benchmarks/results_2026-12-01/session14/probe_graph_capture_3.txt``), from 16 rows up: LayerNorm
forward 1.38-2.56x and forward+backward 1.19-3.35x (bf16, fp32; widths 768, 1024, 4096; 16-16384 rows),
softmax 1.02-3.13x and 1.54-2.70x (bf16, fp32; 64x512 to 16384x1024 and attention scores from
1x16x128x128), Linear+ReLU bf16 1.08-1.39x and 1.08-1.30x (64-8192 rows, FFN shapes). Kernels first
called inside a capture compile and load there (``probe_graph_capture_2.txt``: LayerNorm, softmax and
Linear+ReLU, forward and backward, after a warm-up in torch as the policy gives it). The large-K
Linear+ReLU rule (:data:`tritonpatch.ops.linear_relu.LARGE_K`) is about GPU time: it applies during a
capture too.
"""
from __future__ import annotations

from typing import Callable

import torch

from tritonpatch.ops import common

__all__ = ["CAPTURES", "MIN_SIZE", "REASON", "below_threshold", "capturing", "torch_is_faster"]


def _never() -> bool:
    return False


#: torch's binding behind ``torch.cuda.is_current_stream_capturing()`` (0 args, bool); on a build without
#: CUDA, where that binding is a placeholder that raises, a function returning False.
_capturing: Callable[[], bool] = (torch._C._cuda_isCurrentStreamCapturing
                                  if torch.backends.cuda.is_built() else _never)


class Captures:
    """``underway``: CUDA graph captures begun and not yet ended, as counted by
    :mod:`tritonpatch.patching.capture_watch` while a patch is active. Only while it is above zero is
    CUDA asked whether the current stream captures (1.6-2.5 us per query on the H200 host, 2026-12-01,
    ``benchmarks/results_2026-12-01/session14/probe_graph_capture{_4,_query}.txt``)."""

    underway: int = 0


CAPTURES = Captures()


def capturing() -> bool:
    """True while the current CUDA stream captures a CUDA graph (one seen by
    :mod:`tritonpatch.patching.capture_watch`). Ask it only for calls on CUDA tensors (it may read the
    current CUDA stream)."""
    return CAPTURES.underway > 0 and _capturing()


_MiB = 2 ** 20

#: op -> (smallest size Triton takes in inference, smallest size when autograd records the call)
MIN_SIZE: dict[str, tuple[int, int]] = {
    "layer_norm": (32 * _MiB, 128 * _MiB),    # bytes of the input
    "softmax": (32 * _MiB, 128 * _MiB),       # bytes of the input
    "linear_relu": (2 * 8192 * 768 * 3072, 2 ** 37),  # forward FLOPs, 2*M*N*K (38.7 G, 137 G)
}

#: The fallback reason the report counts.
REASON = "torch is faster at this size"


def below_threshold(op: str, size: int, training: bool) -> bool:
    """The measured rule alone (no configuration read): ``size`` under ``op``'s threshold.

    ``op`` is ``"layer_norm"``, ``"softmax"`` or ``"linear_relu"``; ``size`` is the input's bytes
    (LayerNorm, softmax) or the forward FLOPs 2*M*N*K (Linear+ReLU); ``training`` says whether autograd
    records the call.
    """
    inference, train = MIN_SIZE[op]
    return size < (train if training else inference)


def torch_is_faster(op: str, size: int, training: bool) -> bool:
    """True when torch's own op is expected to beat the patched call (:func:`below_threshold`). Always
    False while the size policy is off, and while the current CUDA stream captures a graph (see the
    module docstring). Callers ask it for calls on CUDA tensors only (or under the interpreter, where
    the policy is off)."""
    inference, train = MIN_SIZE[op]  # below_threshold, inline: this runs on every patched call
    return (size < (train if training else inference) and common.SETTINGS.size_policy
            and not (CAPTURES.underway and _capturing()))
