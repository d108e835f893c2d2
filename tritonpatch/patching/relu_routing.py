"""The functional ReLUs of Linear+ReLU pairs: skip the work on an already fused output, else torch.

While a patch with functional pairs is active, ``F.relu``, ``F.relu_``, ``torch.relu``, ``torch.relu_``,
``Tensor.relu`` and ``Tensor.relu_`` are wrappers that return the input unchanged when it is the output
a fused Linear+ReLU just produced on this thread (its ReLU is applied already), and call the original
otherwise. The originals come back by identity when the last such patch leaves.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..layers import take_fused
from .function_swap import FunctionSwap


def _f_relu(input: torch.Tensor, inplace: bool = False) -> torch.Tensor:  # noqa: A002
    if take_fused(input):
        return input
    return SWAP.original("torch.nn.functional.relu")(input, inplace)


def _f_relu_(input: torch.Tensor) -> torch.Tensor:  # noqa: A002
    if take_fused(input):
        return input
    return SWAP.original("torch.nn.functional.relu_")(input)


def _torch_relu(input: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:  # noqa: A002
    if not args and not kwargs and take_fused(input):
        return input
    return SWAP.original("torch.relu")(input, *args, **kwargs)


def _torch_relu_(input: torch.Tensor) -> torch.Tensor:  # noqa: A002
    if take_fused(input):
        return input
    return SWAP.original("torch.relu_")(input)


def _tensor_relu(self: torch.Tensor) -> torch.Tensor:
    if take_fused(self):
        return self
    return SWAP.original("Tensor.relu")(self)


def _tensor_relu_(self: torch.Tensor) -> torch.Tensor:
    if take_fused(self):
        return self
    return SWAP.original("Tensor.relu_")(self)


for _wrapper, _orig in ((_f_relu, F.relu), (_f_relu_, F.relu_), (_torch_relu, torch.relu),
                        (_torch_relu_, torch.relu_), (_tensor_relu, torch.Tensor.relu),
                        (_tensor_relu_, torch.Tensor.relu_)):
    _wrapper.__doc__ = _orig.__doc__

SWAP = FunctionSwap([(F, "relu", _f_relu), (F, "relu_", _f_relu_), (torch, "relu", _torch_relu),
                     (torch, "relu_", _torch_relu_), (torch.Tensor, "relu", _tensor_relu),
                     (torch.Tensor, "relu_", _tensor_relu_)])
