"""``qidbm sample``: draw samples from a checkpoint (:func:`qidbm.api.draw_samples`), save them as a PNG
grid and an array, and print the share of each class (MNIST, Fashion-MNIST).

This module parses the arguments and prints and writes; the sampling itself is :func:`qidbm.sample`'s
(the same defaults and random numbers: ``qidbm.sample(path, n, seed)`` returns the images written here).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from qidbm.preflight import output_path_problem


def cli_flag(setting: str) -> str:
    """The command-line flag of an API setting (``ais_runs`` -> ``--ais-runs``), for error messages."""
    return {"n": "--num-samples", "source": "--ckpt_path"}.get(setting, "--" + setting.replace("_", "-"))


def add_checkpoint_argument(p: argparse.ArgumentParser, help: str) -> None:
    """``--ckpt_path`` (the name ``qidbm fit`` uses, Lightning's), with ``--ckpt`` as an alias."""
    p.add_argument("--ckpt_path", "--ckpt", dest="ckpt_path", required=True, metavar="PATH", help=help)


def _sample_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qidbm sample", description="Draw samples from a qidbm checkpoint "
                                "(in Python: qidbm.sample(path, n, seed=...)).")
    add_checkpoint_argument(p, "checkpoint written by `qidbm fit` or shipped in checkpoints/ (.ckpt)")
    p.add_argument("--num-samples", type=int, default=64, help="number of samples (default 64)")
    p.add_argument("--out", default="samples", help="output folder, or a .png file path (default ./samples)")
    from qidbm.samplers.arguments import add_sampling_arguments

    add_sampling_arguments(p)
    return p


def cmd_sample(argv: list[str]) -> int:
    import numpy as np

    from qidbm.api import SampleMemoryError, SettingError, draw_samples
    from qidbm.atomic import atomic_write
    from qidbm.images import save_grid, visible_to_images
    from qidbm.samplers.arguments import SAMPLING_OPTIONS

    a = _sample_parser().parse_args(argv)
    if a.num_samples < 1:
        print(f"error: --num-samples must be a positive integer, got {a.num_samples}", file=sys.stderr)
        return 2
    out = Path(a.out)
    # everything that can be checked before the sampling is: output path, then (in draw_samples) device, memory
    problem = output_path_problem(out, folder=out.suffix.lower() != ".png")
    if problem:
        print(f"error: --out {a.out}: {problem}; choose another path (nothing was sampled)", file=sys.stderr)
        return 2
    try:
        drawn = draw_samples(a.ckpt_path, a.num_samples, a.seed, batch_size=a.batch_size, device=a.device,
                             data_root=a.data_root, progress=True, **{k: getattr(a, k) for k in SAMPLING_OPTIONS})
    except (SettingError, SampleMemoryError) as e:
        print(f"error: {e.message(cli_flag)}", file=sys.stderr)
        return 2
    info, data_info = drawn.loaded.info, drawn.loaded.data_info
    # a machine without data info is laid out as square grey images (binary units), as before
    images = drawn.images if data_info is not None else visible_to_images(drawn.visible, None)
    if out.suffix.lower() == ".png":
        png, arr = out, out.with_suffix(".npy")
    else:
        out.mkdir(parents=True, exist_ok=True)
        png, arr = out / "samples.png", out / "samples.npy"
    save_grid(images[: min(len(images), 400)], png)
    atomic_write(arr, lambda f: np.save(f, images.numpy()), fsync=False)
    print(f"model: {info['model_class']} {info['model_config']}")
    print(f"sampling: {drawn.sampling.describe()}")
    for l, rate in drawn.stats.acceptance().items():
        print(f"acceptance rate (quantum layer {l}): {float(rate):.4f}")
    if drawn.stats.swap_rates():
        print("replica swap acceptance (pairs 0-1, 1-2, ...): "
              + ", ".join(f"{float(r):.3f}" for r in drawn.stats.swap_rates().values()))
    dataset = (data_info or {}).get("dataset")
    from qidbm.metrics.classifier import CLASSIFIER_FILES, class_coverage

    if dataset in CLASSIFIER_FILES:
        cov = class_coverage(images, dataset)
        shares = ", ".join(f"{c} {100 * f:.1f}%" for c, f in zip(cov["classes"], cov["fractions"]))
        print(f"classes (shipped {dataset} classifier): {shares}; {cov['classes_in_range']}/10 within 4-20 %")
    print(f"wrote {png} (grid of {min(len(images), 400)}) and {arr} ({len(images)} images, {tuple(images.shape[1:])}, [0, 1])")
    return 0
