"""Average the weights of several checkpoints of one run into a new checkpoint (a post-hoc SWA probe).

    python scripts/average_checkpoints.py OUT.ckpt RUN/checkpoints/step=44000.ckpt ... RUN/checkpoints/last.ckpt

Every floating-point tensor of the state dict becomes the mean over the checkpoints; everything
else (training settings, data info) is the last checkpoint's. Score the result with `qidbm evaluate`.
"""

from __future__ import annotations

import argparse

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("checkpoints", nargs="+")
    a = p.parse_args()
    if len(a.checkpoints) < 2:
        p.error("give at least two checkpoints to average")
    cks = [torch.load(f, map_location="cpu", weights_only=False) for f in a.checkpoints]
    avg = cks[-1]
    for k, v in avg["state_dict"].items():
        if v.is_floating_point():
            avg["state_dict"][k] = sum(c["state_dict"][k] for c in cks) / len(cks)
    torch.save(avg, a.out)
    print(f"wrote {a.out}: mean of {len(cks)} checkpoints' weights")


if __name__ == "__main__":
    main()
