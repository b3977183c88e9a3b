"""Sample quality against wall-clock training time: FID and class coverage of every checkpoint of runs.

For each run folder (``qidbm fit``'s ``default_root_dir``), every ``checkpoints/*.ckpt`` is sampled
the way the machine was trained to be sampled (``qidbm.samplers.drawing.trained_sampling``; else
``--num-steps`` Gibbs sweeps from noise), and scored by FID (``--fid-samples`` against the
10,000 test images, pytorch-fid Inception) and class coverage (the shipped classifier, on the
first ``--coverage-samples`` of them). The training wall time of a checkpoint is the elapsed time
its ``Timer`` callback recorded (runs with ``trainer.max_time``), else the file's age since the
run's first checkpoint. Writes ``<out>.json`` and ``<out>.png`` (FID and classes within 4-20 %
against training minutes, one line per run).

    python scripts/quality_curve.py runs/cpu_mnist_binary_dbm runs/cpu_mnist_binary_qidbm \\
        --fid-weights /path/to/pt_inception-2015-12-05-6726825d.pth --out bench/results/quality_mnist_binary
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch


def training_seconds(ckpt: dict) -> float | None:
    """Elapsed training time stored by Lightning's ``Timer`` callback (present when max_time is set)."""
    for key, state in (ckpt.get("callbacks") or {}).items():
        if key.startswith("Timer") and isinstance(state, dict):
            return float((state.get("time_elapsed") or {}).get("train", 0.0))
    return None


def run_label(rows: list[dict]) -> str:
    """``DBM (dbm_s1)``: the model and the run folder, skipping Lightning's ``lightning_logs/version_N``."""
    parts = [x for x in Path(rows[0]["run"]).parts if x != "lightning_logs" and not x.startswith("version_")]
    return f"{rows[0]['model']} ({parts[-1] if parts else rows[0]['run']})"


def plot(rows: list[dict], png: Path, fid_samples: int, hw: str) -> None:
    """FID and classes within 4-20 % against training minutes, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    for run in dict.fromkeys(r["run"] for r in rows):
        pts = [r for r in rows if r["run"] == run]
        t = [r["train_seconds"] / 60 for r in pts]
        ax1.plot(t, [r["fid"] for r in pts], "o-", label=run_label(pts))
        if pts[0]["coverage"]:
            ax2.plot(t, [r["coverage"]["classes_in_range"] for r in pts], "o-", label=run_label(pts))
    ax1.set_xlabel("training wall time (min)")
    ax1.set_ylabel(f"FID ({fid_samples} samples)")
    ax2.set_xlabel("training wall time (min)")
    ax2.set_ylabel("classes with 4-20 % of samples")
    ax2.set_ylim(0, 10.5)
    ax1.legend(fontsize=7)
    fig.suptitle(hw, fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=120)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="*", type=Path, help="run folders (each with checkpoints/)")
    p.add_argument("--fid-samples", type=int, default=2000)
    p.add_argument("--coverage-samples", type=int, default=1000)
    p.add_argument("--num-steps", type=int, default=1000, help="Gibbs sweeps when the run has no trained sampling")
    p.add_argument("--fid-weights", default=None)
    p.add_argument("--data-root", default=None)
    p.add_argument("--every", type=int, default=1, help="evaluate every n-th checkpoint (the last always)")
    p.add_argument("--out", required=True, help="output path without extension (.json and .png are written)")
    p.add_argument("--replot", type=Path, default=None, help="draw <out>.png from this JSON of an earlier run (no sampling)")
    a = p.parse_args(argv)
    if a.replot is not None:
        saved = json.loads(a.replot.read_text())
        fid_samples = saved["rows"][0]["fid_samples"] if saved["rows"] else a.fid_samples
        plot(saved["rows"], Path(a.out).with_suffix(".png"), fid_samples, saved["hardware"])
        print(f"wrote {Path(a.out).with_suffix('.png')}")
        return 0
    if not a.runs:
        p.error("give run folders to score (or --replot JSON to redraw an earlier result)")

    from qidbm.checkpoint import load_checkpoint
    from qidbm.api import checkpoint_files
    from qidbm.data import datamodule_from_info
    from qidbm.images import visible_to_images
    from qidbm.metrics import frechet_distance, reference_stats
    from qidbm.metrics.classifier import class_coverage
    from qidbm.metrics.fid import FIDAccumulator
    from qidbm.samplers.drawing import SamplingSpec, draw, trained_sampling

    acc = FIDAccumulator(a.fid_weights, batch_size=50, device="cpu", progress=False, fuse_bn=True)
    rows, dms = [], {}
    for run in a.runs:
        files = checkpoint_files(run)
        files = [f for i, f in enumerate(files) if i % a.every == 0 or i == len(files) - 1]
        t_first = None
        for f in files:
            raw = torch.load(f, map_location="cpu", weights_only=False)
            model, info = load_checkpoint(f)
            di = info["data_info"]
            key = (di["dataset"], di["encoding"])
            if key not in dms:
                dms[key] = datamodule_from_info(di, a.data_root)
                dms[key].setup("fit")
            dm = dms[key]
            spec = trained_sampling(info.get("hyper_parameters"), model.gaussian_visible) or SamplingSpec(num_steps=a.num_steps)
            g = torch.Generator().manual_seed(0)
            t0 = time.time()
            images = visible_to_images(draw(model, a.fid_samples, spec, generator=g)[0], di)
            t_sample = time.time() - t0
            ref = {"dataset": di["dataset"], "split": "test", "encoding": di["encoding"],
                   "preprocessing": di.get("preprocessing")}
            mu_r, sigma_r = reference_stats(ref, dm.test_images, accumulator=acc)
            acc.reset()
            mu, sigma = acc.update(images).compute_stats()
            fid = float(frechet_distance(mu, sigma, mu_r, sigma_r, method="eigh"))
            cov = class_coverage(images[: a.coverage_samples], di["dataset"]) if di["dataset"] in ("MNIST", "FashionMNIST") else None
            secs = training_seconds(raw)
            if secs is None:
                t_first = t_first or f.stat().st_mtime
                secs = f.stat().st_mtime - t_first
            row = {"run": str(run), "checkpoint": f.name, "global_step": raw.get("global_step"),
                   "train_seconds": round(secs, 1), "fid": fid, "fid_samples": a.fid_samples,
                   "sampling": spec.describe(), "sampling_seconds": round(t_sample, 1), "coverage": cov,
                   "model": info["model_class"]}
            rows.append(row)
            print(f"{run.name} {f.name} step {row['global_step']} {secs / 60:.1f} min: FID {fid:.2f}"
                  + (f", classes in 4-20 %: {cov['classes_in_range']}/10, KL {cov['kl_from_uniform']:.3f}" if cov else ""),
                  flush=True)
    hw = f"{platform.machine()} {platform.processor() or ''}, torch {torch.__version__}, {torch.get_num_threads()} threads"
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(
        {"command": "python scripts/quality_curve.py " + " ".join(argv if argv is not None else sys.argv[1:]),
         "hardware": hw, "rows": rows}, indent=2))
    plot(rows, out.with_suffix(".png"), a.fid_samples, hw)
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
