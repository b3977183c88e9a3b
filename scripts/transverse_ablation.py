"""A quantum checkpoint with its transverse fields scaled: does Gamma change what the machine draws?

Writes a copy of a ``qidbm fit`` checkpoint whose transverse-field parameters (``transverse_field``,
``transverse_fields.*``, and with ``--couplings`` the coupled-field weights) are multiplied by
``--scale``; every other tensor, the data information and the training settings are kept, so
``qidbm sample`` / ``qidbm evaluate`` draw from it by the same protocol. ``--scale 0`` is the
classical twin of the trained machine (same weights and biases, Gamma = 0): comparing the two
evaluations says what the learned fields contribute to the samples. Prints the fields' summary.

    python scripts/transverse_ablation.py runs/cpu_mnist_qgrbm/.../last.ckpt --scale 0 --out runs/qgrbm_gamma0.ckpt
    qidbm evaluate --ckpt runs/qgrbm_gamma0.ckpt --num-samples 10000 --fid-weights ...
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch


def is_transverse(key: str, couplings: bool) -> bool:
    name = key.split(".", 1)[1] if key.startswith("model.") else key
    return name.startswith(("transverse_field", "transverse_fields.")) or (couplings and name.startswith(("transverse_weight", "transverse_weights.")))


def scale_transverse(ckpt: dict, scale: float, couplings: bool = False) -> list[str]:
    """Multiply the transverse-field tensors of a checkpoint dict in place; returns their keys."""
    keys = [k for k in ckpt["state_dict"] if is_transverse(k, couplings)]
    if not keys:
        raise ValueError("this checkpoint has no transverse fields (a classical model): nothing to scale")
    for k in keys:
        ckpt["state_dict"][k] = ckpt["state_dict"][k] * scale
    return keys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ckpt", type=Path)
    p.add_argument("--scale", type=float, required=True, help="factor for every transverse field (0: classical twin)")
    p.add_argument("--couplings", action="store_true", help="scale coupled-field weights too")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    if a.out.resolve() == a.ckpt.resolve():
        p.error("--out must differ from the input checkpoint (it is never overwritten)")
    from qidbm.checkpoint import atomic_torch_save

    ckpt = torch.load(a.ckpt, map_location="cpu", weights_only=False)
    for k in scale_transverse(ckpt, a.scale, a.couplings):
        g = ckpt["state_dict"][k].abs().float()
        q = torch.quantile(g.flatten()[:1_000_000], torch.tensor([0.1, 0.5, 0.9])).tolist()
        print(f"{k}: |Gamma| after x{a.scale:g}: 10/50/90 % quantiles {q[0]:.4g} / {q[1]:.4g} / {q[2]:.4g}, max {g.max():.4g}")
    ckpt.setdefault("qidbm_ablation", {})["transverse_scale"] = a.scale
    atomic_torch_save(ckpt, a.out)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
