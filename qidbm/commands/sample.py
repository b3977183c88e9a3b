"""``qidbm sample``: draw samples from a checkpoint (:func:`qidbm.api.draw_samples`), save them as a PNG
grid and an array, and print the share of each class (MNIST, Fashion-MNIST).

This module parses the arguments and prints and writes; the sampling itself is :func:`qidbm.sample`'s
(the same defaults and random numbers: ``qidbm.sample(path, n, seed)`` returns the images written here).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from qidbm.preflight import output_path_problem, unnamed_output_problem


def cli_flag(setting: str) -> str:
    """The command-line flag of an API setting (``ais_runs`` -> ``--ais-runs``), for error messages."""
    return {"n": "--num-samples", "source": "--ckpt_path"}.get(setting, "--" + setting.replace("_", "-"))


def add_checkpoint_argument(p: argparse.ArgumentParser, help: str) -> None:
    """``--ckpt_path`` (the name ``qidbm fit`` uses, Lightning's), with ``--ckpt`` as an alias."""
    p.add_argument("--ckpt_path", "--ckpt", dest="ckpt_path", required=True, metavar="PATH", help=help)


def add_debug_argument(p: argparse.ArgumentParser) -> None:
    """``--debug`` in the help (the ``qidbm`` command takes it off the line before parsing: qidbm.cli.run)."""
    p.add_argument("--debug", action="store_true", help="show the traceback of an error (also QIDBM_DEBUG=1)")


def _sample_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qidbm sample", description="Draw samples from a qidbm checkpoint "
                                "(in Python: qidbm.sample(path, n, seed=...)).")
    add_checkpoint_argument(p, "checkpoint written by `qidbm fit` or shipped in checkpoints/ (.ckpt)")
    p.add_argument("--num-samples", type=int, default=64, help="number of samples (default 64)")
    p.add_argument("--out", default="samples", help="output folder, or a .png file path (default ./samples)")
    from qidbm.samplers.arguments import add_sampling_arguments

    add_sampling_arguments(p)
    add_debug_argument(p)
    return p


def cmd_sample(argv: list[str]) -> int:
    from qidbm.api import SampleMemoryError, SettingError, draw_samples, grid_png_writer
    from qidbm.atomic import OutputWriteError, atomic_write_set, npy_writer
    from qidbm.images import visible_to_images
    from qidbm.samplers.arguments import SAMPLING_OPTIONS

    a = _sample_parser().parse_args(argv)
    if a.num_samples < 1:
        print(f"qidbm sample: error: --num-samples must be a positive integer, got {a.num_samples}", file=sys.stderr)
        return 2
    out = Path(a.out)
    if out.suffix.lower() == ".png":
        png, arr = out, out.with_suffix(".npy")
    else:
        png, arr = out / "samples.png", out / "samples.npy"
    # everything that can be checked before the sampling is: output path, then (in draw_samples) seed,
    # device, memory
    problem = output_path_problem(out, folder=out.suffix.lower() != ".png")
    if problem:
        print(f"qidbm sample: error: --out {a.out}: {problem}; choose another path (nothing was sampled)", file=sys.stderr)
        return 2
    if png == out:  # the array is written beside the grid the user named: never over a file of someone else's
        problem = unnamed_output_problem(png, arr)
        if problem:
            print(f"qidbm sample: error: --out {a.out}: {problem} (nothing was sampled)", file=sys.stderr)
            return 2
    try:
        drawn = draw_samples(a.ckpt_path, a.num_samples, a.seed, batch_size=a.batch_size, device=a.device,
                             data_root=a.data_root, progress=True, **{k: getattr(a, k) for k in SAMPLING_OPTIONS})
    except (SettingError, SampleMemoryError) as e:
        print(f"qidbm sample: error: {e.message(cli_flag)}", file=sys.stderr)
        return 2
    info, data_info = drawn.loaded.info, drawn.loaded.data_info
    # a machine without data info is laid out as square grey images (binary units), as before
    images = drawn.images if data_info is not None else visible_to_images(drawn.visible, None)
    shown = min(len(images), 400)
    values = images.numpy()
    try:  # the grid and the array as one set: both new, or (a full disk, a quota) both as they were
        atomic_write_set([(png, grid_png_writer(images[:shown])), (arr, npy_writer(values))],
                         what="samples")
    except OutputWriteError as e:
        print(f"qidbm sample: error: {e.strerror}", file=sys.stderr)
        return 1
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
    print(f"wrote {png} (grid of {shown}) and {arr} ({len(images)} images, {tuple(images.shape[1:])}, [0, 1])")
    return 0
