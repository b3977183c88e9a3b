"""``qidbm sample``: draw samples from a checkpoint, save them as a PNG grid and an array, and print
the share of each class (MNIST, Fashion-MNIST)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from qidbm.preflight import check_device_arg, check_sample_memory, output_path_problem


def _sample_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qidbm sample", description="Draw samples from a qidbm checkpoint.")
    p.add_argument("--ckpt", required=True, help="checkpoint written by `qidbm fit` (.ckpt)")
    p.add_argument("--num-samples", type=int, default=64, help="number of samples (default 64)")
    p.add_argument("--out", default="samples", help="output folder, or a .png file path (default ./samples)")
    from qidbm.samplers.arguments import add_sampling_arguments

    add_sampling_arguments(p)
    return p


def _load_data(info: dict, root: str | None):
    from qidbm.data import datamodule_from_info

    dm = datamodule_from_info(info, root=root)
    dm.setup("fit")
    return dm


def cmd_sample(argv: list[str]) -> int:
    import numpy as np
    import torch

    from qidbm.atomic import atomic_write
    from qidbm.checkpoint import load_checkpoint
    from qidbm.images import save_grid, visible_to_images
    from qidbm.samplers import drawing
    from qidbm.samplers.arguments import spec_from_arguments

    a = _sample_parser().parse_args(argv)
    if a.num_samples < 1:
        print(f"error: --num-samples must be a positive integer, got {a.num_samples}", file=sys.stderr)
        return 2
    out = Path(a.out)
    # everything that can be checked before the sampling is: device, output path, memory
    problem = check_device_arg(a.device) or output_path_problem(out, folder=out.suffix.lower() != ".png")
    if problem:
        print(f"error: {problem}" if problem.startswith("--") else f"error: --out {a.out}: {problem}; choose another "
              "path (nothing was sampled)", file=sys.stderr)
        return 2
    model, info = load_checkpoint(a.ckpt, map_location=a.device)
    spec = spec_from_arguments(a, info.get("hyper_parameters"), model.gaussian_visible)
    try:
        check_sample_memory(a.num_samples, model.n_visible, a.device)
    except MemoryError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    data = None
    if spec.start != "noise":
        dm = _load_data(info["data_info"], a.data_root)
        data = torch.cat([b for _, b in zip(range(-(-a.num_samples // dm.batch_size)), dm.train_dataloader())])
    g = torch.Generator(device=a.device)
    g.manual_seed(a.seed)
    x, stats = drawing.draw(model, a.num_samples, spec, data=data, generator=g, progress=True)
    images = visible_to_images(x, info.get("data_info"))
    if out.suffix.lower() == ".png":
        png, arr = out, out.with_suffix(".npy")
    else:
        out.mkdir(parents=True, exist_ok=True)
        png, arr = out / "samples.png", out / "samples.npy"
    save_grid(images[: min(len(images), 400)], png)
    atomic_write(arr, lambda f: np.save(f, images.numpy()), fsync=False)
    print(f"model: {info['model_class']} {info['model_config']}")
    print(f"sampling: {spec.describe()}")
    for l, rate in stats.acceptance().items():
        print(f"acceptance rate (quantum layer {l}): {float(rate):.4f}")
    if stats.swap_rates():
        print("replica swap acceptance (pairs 0-1, 1-2, ...): " + ", ".join(f"{float(r):.3f}" for r in stats.swap_rates().values()))
    dataset = (info.get("data_info") or {}).get("dataset")
    from qidbm.metrics.classifier import CLASSIFIER_FILES, class_coverage

    if dataset in CLASSIFIER_FILES:
        cov = class_coverage(images, dataset)
        shares = ", ".join(f"{c} {100 * f:.1f}%" for c, f in zip(cov["classes"], cov["fractions"]))
        print(f"classes (shipped {dataset} classifier): {shares}; {cov['classes_in_range']}/10 within 4-20 %")
    print(f"wrote {png} (grid of {min(len(images), 400)}) and {arr} ({len(images)} images, {tuple(images.shape[1:])}, [0, 1])")
    return 0
