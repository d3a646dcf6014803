"""Write the example PyTorch model of docs/examples/model_repository (served by nereid-pytorch).

- ``simple_pytorch``: Triton's ``simple`` model as TorchScript (``torch.jit.script``):
  INPUT__0, INPUT__1 INT32 [16] -> OUTPUT__0 = INPUT__0 + INPUT__1,
  OUTPUT__1 = INPUT__0 - INPUT__1, ``max_batch_size`` 8, with the ``config.pbtxt`` TorchScript
  needs (a TorchScript file carries no tensor names or types).

The .pt file (about 2 KB) is committed; run this again (``pip install torch``) only to change it:

    python docs/examples/make_pytorch_examples.py
"""

from __future__ import annotations

from pathlib import Path

import torch

REPOSITORY = Path(__file__).resolve().parent / "model_repository"

SIMPLE_CONFIG = """\
# Triton's "simple" model as TorchScript (made by docs/examples/make_pytorch_examples.py), served
# by the nereid-pytorch plugin: OUTPUT__0 = INPUT__0 + INPUT__1, OUTPUT__1 = INPUT__0 - INPUT__1.
# Inputs and outputs are matched to forward's arguments and results by their __<index>.
platform: "pytorch_libtorch"
max_batch_size: 8
input [
  { name: "INPUT__0" data_type: TYPE_INT32 dims: [ 16 ] },
  { name: "INPUT__1" data_type: TYPE_INT32 dims: [ 16 ] }
]
output [
  { name: "OUTPUT__0" data_type: TYPE_INT32 dims: [ 16 ] },
  { name: "OUTPUT__1" data_type: TYPE_INT32 dims: [ 16 ] }
]
instance_group [ { kind: KIND_CPU count: 1 } ]
"""


class AddSub(torch.nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return a + b, a - b


def main() -> None:
    folder = REPOSITORY / "simple_pytorch"
    (folder / "1").mkdir(parents=True, exist_ok=True)
    (folder / "config.pbtxt").write_text(SIMPLE_CONFIG)
    torch.jit.save(torch.jit.script(AddSub().eval()), str(folder / "1" / "model.pt"))
    print(f"wrote {folder}")


if __name__ == "__main__":
    main()
