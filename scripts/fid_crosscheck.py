"""Cross-check `qidbm evaluate`'s FID with an independent pytorch-fid run on the same samples.

Writes the samples saved by ``qidbm evaluate --save-samples DIR`` (``DIR/samples.npy``) and
the reference test images (encoded then decoded like the training data) as PNG files, then
runs pytorch-fid's own ``calculate_fid_given_paths`` (its InceptionV3, its PIL loading and
its statistics) on the two folders, with the weights file placed where pytorch-fid looks
for it (``$TORCH_HOME/hub/checkpoints``), and compares with ``evaluate.json``'s FID.

    python scripts/fid_crosscheck.py --samples DIR --evaluate-json DIR/../evaluate.json \
        --ckpt checkpoints/qidbm_mnist_binary.ckpt --fid-weights /path/to/pt_inception-2015-12-05-6726825d.pth
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch


def write_pngs(images: np.ndarray, folder: Path) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    arr = np.clip(np.rint(images * 255.0), 0, 255).astype(np.uint8)  # [N, C, H, W]
    for i, img in enumerate(arr):
        im = img[0] if img.shape[0] == 1 else np.transpose(img, (1, 2, 0))
        Image.fromarray(im).save(folder / f"{i:05d}.png")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", required=True, help="folder with samples.npy from `qidbm evaluate --save-samples`")
    p.add_argument("--evaluate-json", required=True)
    p.add_argument("--ckpt", required=True, help="the evaluated checkpoint (for its data info)")
    p.add_argument("--fid-weights", required=True)
    p.add_argument("--data-root", default=None)
    p.add_argument("--batch-size", type=int, default=200)
    p.add_argument("--reference-stats", default=None,
                   help="use this .npz (mu, sigma) for the reference side instead of writing the test images as PNGs "
                        "(e.g. qidbm's cached statistics, to save 10,000 Inception passes on a CPU)")
    a = p.parse_args(argv)

    from pytorch_fid.fid_score import calculate_fid_given_paths

    from qidbm.checkpoint import load_checkpoint
    from qidbm.data import datamodule_from_info

    gen = np.load(Path(a.samples) / "samples.npy")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_pngs(gen, tmp / "generated")
        if a.reference_stats:
            ref_path, n_ref = str(a.reference_stats), int(np.load(a.reference_stats)["n"])
        else:
            _, info = load_checkpoint(a.ckpt)
            dm = datamodule_from_info(info["data_info"], a.data_root)
            dm.setup("test")
            ref = dm.test_images().numpy()
            write_pngs(ref, tmp / "reference")
            ref_path, n_ref = str(tmp / "reference"), int(ref.shape[0])
        hub = tmp / "torch_home" / "hub" / "checkpoints"
        hub.mkdir(parents=True)
        os.symlink(Path(a.fid_weights).resolve(), hub / "pt_inception-2015-12-05-6726825d.pth")
        os.environ["TORCH_HOME"] = str(tmp / "torch_home")
        fid_ref = calculate_fid_given_paths([str(tmp / "generated"), ref_path], a.batch_size, "cpu", 2048,
                                            num_workers=0)
    ours = json.loads(Path(a.evaluate_json).read_text())["fid"]
    rel = abs(ours - fid_ref) / fid_ref
    out = {"qidbm_evaluate_fid": ours, "pytorch_fid_cli_fid": fid_ref, "relative_difference": rel,
           "num_generated": int(gen.shape[0]), "num_reference": n_ref,
           "reference": "cached qidbm statistics" if a.reference_stats else "test-image PNGs", "torch": torch.__version__}
    print(json.dumps(out, indent=2))
    print(f"relative difference {100 * rel:.3f}% ({'within' if rel < 0.02 else 'NOT within'} 2%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
