"""Small real PyTorch models, serialized as the backend loads them, and their configurations.

Module classes live here (not in test functions) because ``torch.jit.script`` reads their source.
"""

from __future__ import annotations

import functools
import io
import itertools
from pathlib import Path

import torch
from torch import Tensor

HERE = Path(__file__).parent


class MLP(torch.nn.Module):
    def __init__(self, sizes: tuple[int, ...] = (16, 32, 8), seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        layers: list[torch.nn.Module] = []
        for a, b in itertools.pairwise(sizes):
            layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
        self.net = torch.nn.Sequential(*layers[:-1])

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class AddSub(torch.nn.Module):
    """Two inputs, a tuple output."""

    def forward(self, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
        return a + b, a - b


class ListOut(torch.nn.Module):
    def forward(self, x: Tensor) -> list[Tensor]:
        return [x * 2, x.sum(dim=1, keepdim=True)]


class DictIn(torch.nn.Module):
    def forward(self, inputs: dict[str, Tensor]) -> Tensor:
        return inputs["X"] * inputs["SCALE"]


class Accumulate(torch.nn.Module):
    """Implicit sequence state: returns the running sum and the next state."""

    def forward(self, x: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        total = state + x
        return total, total


class Int64Out(torch.nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.to(torch.int64)


def save_script(module: torch.jit.ScriptModule) -> bytes:
    buffer = io.BytesIO()
    torch.jit.save(module, buffer)
    return buffer.getvalue()


@functools.cache
def traced_mlp(sizes: tuple[int, ...] = (16, 32, 8), seed: int = 0) -> tuple[bytes, MLP]:
    eager = MLP(sizes, seed).eval()
    traced = torch.jit.trace(eager, torch.zeros(2, sizes[0]))
    return save_script(traced), eager


def scripted(module: torch.nn.Module) -> bytes:
    return _scripted(type(module))


@functools.cache
def _scripted(cls: type) -> bytes:
    return save_script(torch.jit.script(cls().eval()))


@functools.cache
def exported_mlp(sizes: tuple[int, ...] = (16, 32, 8), seed: int = 0, dynamic: bool = True):
    eager = MLP(sizes, seed).eval()
    shapes = {"x": {0: torch.export.Dim("batch", min=1, max=1024)}} if dynamic else None
    program = torch.export.export(eager, (torch.zeros(2, sizes[0]),), dynamic_shapes=shapes)
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue(), eager


def exported(module: torch.nn.Module, args: tuple, dynamic_shapes=None) -> bytes:
    program = torch.export.export(module.eval(), args, dynamic_shapes=dynamic_shapes)
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()


def mlp_config(name: str = "mlp", max_batch_size: int = 8, extra: str = "") -> str:
    return f"""
    name: "{name}"
    backend: "pytorch"
    max_batch_size: {max_batch_size}
    input [ {{ name: "INPUT__0" data_type: TYPE_FP32 dims: [ 16 ] }} ]
    output [ {{ name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 8 ] }} ]
    instance_group [ {{ kind: KIND_CPU count: 1 }} ]
    {extra}
    """


ADD_SUB_CONFIG = """
platform: "pytorch_libtorch"
max_batch_size: 8
input [
  { name: "b" data_type: TYPE_INT32 dims: [ 4 ] },
  { name: "a" data_type: TYPE_INT32 dims: [ 4 ] }
]
output [
  { name: "SUM__0" data_type: TYPE_INT32 dims: [ 4 ] },
  { name: "DIFF__1" data_type: TYPE_INT32 dims: [ 4 ] }
]
"""

DICT_CONFIG = """
backend: "pytorch"
max_batch_size: 4
input [
  { name: "X" data_type: TYPE_FP32 dims: [ 3 ] },
  { name: "SCALE" data_type: TYPE_FP32 dims: [ 1 ] }
]
output [ { name: "Y" data_type: TYPE_FP32 dims: [ 3 ] } ]
"""
