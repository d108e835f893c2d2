"""Where PyTorch is faster: the sizes below which a patched call falls back, with the reason
``"torch is faster at this size"``.

A patched call costs more CPU than torch's own op (Python dispatch, a Triton launch, and in training a
Python autograd node), and saves GPU time in proportion to the bytes it moves. So Triton wins from a
size up, and that size is larger in training (the autograd node's CPU cost comes on top).

Measured on an H100 80GB HBM3 host, 2026-11-26 (torch 2.11, triton 3.6), by
``benchmarks/crossover.py``: patched vs unpatched modules called back to back, one sync per 50 calls,
so CPU time counts as much as GPU time, as in a launch-bound model (ratios torch / patched):

* LayerNorm forward: bf16 4096x4096 (32 MiB) 0.54, 16384x1024 (32 MiB) 0.62, 16384x4096 (128 MiB) 1.26;
  fp32 16384x1024 (64 MiB) 1.17, 4096x4096 (64 MiB) 1.00.
  Forward+backward: fp32 16384x1024 (64 MiB) 0.92, 4096x4096 0.78; bf16 16384x4096 (128 MiB) 1.30.
* softmax forward: bf16 4096x4096 (32 MiB) 1.21 but 16384x1024 (32 MiB) 0.67; fp32 16384x1024 (64 MiB)
  1.04, 4096x4096 (64 MiB) 1.26. Forward+backward: fp32 4096x4096 (64 MiB) 0.87, 16384x1024 1.38;
  bf16 16384x4096 (128 MiB) 1.66.
* Linear+ReLU (bf16, cuBLASLt epilogue), forward: 8192x1024->4096 (68.7 GFLOP) 1.35, 8192x4096->1024
  (68.7 GFLOP) 1.02, 8192x768->3072 (38.7 GFLOP) 0.92, every 2048-row shape 0.58-0.70.
  Forward+backward: 8192x1024->4096 1.09, 8192x4096->1024 0.97, 8192x768->3072 0.58; 16384x1024->4096
  (137 GFLOP) 1.07 (benchmarks/bench_linear_relu.py, same host and day).

Thresholds (the input's bytes for LayerNorm and softmax, forward FLOPs 2*M*N*K for Linear+ReLU) sit at
the first size that won for every shape measured there. Off under the interpreter and with
``TRITONPATCH_SIZE_POLICY=0`` (see :func:`tritonpatch.ops.common.size_policy_on`).
"""
from __future__ import annotations

from tritonpatch.ops import common

__all__ = ["MIN_SIZE", "REASON", "below_threshold", "torch_is_faster"]

_MiB = 2 ** 20

#: op -> (smallest size Triton takes in inference, smallest size when autograd records the call)
MIN_SIZE: dict[str, tuple[int, int]] = {
    "layer_norm": (64 * _MiB, 128 * _MiB),    # bytes of the input
    "softmax": (64 * _MiB, 128 * _MiB),       # bytes of the input
    "linear_relu": (2 ** 36, 2 ** 37),        # forward FLOPs, 2*M*N*K (68.7 G, 137 G)
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
    False while the size policy is off."""
    return below_threshold(op, size, training) and common.size_policy_on()  # the environment is read last
