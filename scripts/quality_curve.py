"""Sample quality against wall-clock training time: FID and class coverage of every checkpoint of runs.

For each run folder (``qidbm fit``'s ``default_root_dir``), every ``checkpoints/*.ckpt`` is sampled
the way the machine was trained to be sampled (``qidbm.samplers.drawing.trained_sampling``; else
``--num-steps`` Gibbs sweeps from noise), and scored by FID (``--fid-samples`` against the
10,000 test images, pytorch-fid Inception) and class coverage (the shipped classifier, on the
first ``--coverage-samples`` of them). A run given as ``FOLDER1+FOLDER2`` is one run whose later
updates were made by a resume into another folder (one curve). The training wall time of a checkpoint
is the elapsed time its ``Timer`` callback recorded (runs with ``trainer.max_time``), else the file's
age since the run started (its first folder's ``config.yaml``, written when the fit starts; else its
first checkpoint). Writes ``<out>.json`` and ``<out>.png`` (FID and classes within 4-20 %
against training minutes, or epochs with ``--x epoch``, or updates with ``--x step``, one line per run).

``--rescore K`` then draws ``--rescore-samples`` fresh samples (another seed) from the K checkpoints of
each run with the lowest FID and keeps the lowest of those as the run's minimum over epochs, the DO-EM
paper's protocol (FID of 10,000 samples against the test set, minimum over epochs); the runs' minima
are printed as a Markdown table and stored under ``"best"``.

    python scripts/quality_curve.py runs/cpu_mnist_binary_dbm runs/cpu_mnist_binary_qidbm \\
        --fid-weights /path/to/pt_inception-2015-12-05-6726825d.pth --out bench/results/quality_mnist_binary
    python scripts/quality_curve.py runs/mnist_binary_dbm_498 runs/mnist_binary_qidbm_498 --x epoch \\
        --rescore 2 --fid-weights $W --out bench/results/paper_498
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch


def training_seconds(ckpt: dict) -> float | None:
    """Elapsed training time stored by Lightning's ``Timer`` callback (present when max_time is set)."""
    for key, state in (ckpt.get("callbacks") or {}).items():
        if key.startswith("Timer") and isinstance(state, dict):
            return float((state.get("time_elapsed") or {}).get("train", 0.0))
    return None


def run_start(folder: Path) -> float | None:
    """When a fit started, as a file time: the earliest ``config.yaml`` / ``hparams.yaml`` under ``folder``."""
    times = [f.stat().st_mtime for name in ("config.yaml", "hparams.yaml") for f in folder.rglob(name)]
    return min(times) if times else None


def run_checkpoints(run: str) -> list[Path]:
    """The checkpoints of a run, one per update count; ``A+B``: the run in folder A continued in folder B
    (a resume with another ``default_root_dir``), B's file winning where both hold a step."""
    from qidbm.api import checkpoint_files
    from qidbm.checkpoint import read_checkpoint

    by_step: dict = {}
    for folder in run.split("+"):
        for f in checkpoint_files(folder):
            by_step[read_checkpoint(f, map_location="cpu", mmap=True).get("global_step")] = f
    return [by_step[k] for k in sorted(by_step)]


def run_label(rows: list[dict]) -> str:
    """``DBM (dbm_s1)``: the model and the run folder, skipping Lightning's ``lightning_logs/version_N``."""
    first = str(rows[0]["run"]).split("+")[0]  # a run continued in another folder is named by its first
    parts = [x for x in Path(first).parts if x != "lightning_logs" and not x.startswith("version_")]
    return f"{rows[0]['model']} ({parts[-1] if parts else rows[0]['run']})"


def x_value(row: dict, x: str) -> float:
    """The row's abscissa: training minutes, the epochs completed by its checkpoint, or its updates."""
    if x == "time":
        return row["train_seconds"] / 60
    return row["epoch"] + 1 if x == "epoch" else row["global_step"]


def plot(rows: list[dict], png: Path, fid_samples: int, hw: str, x: str = "time") -> None:
    """FID and classes within 4-20 % against training minutes (or epochs), one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    for run in dict.fromkeys(r["run"] for r in rows):
        pts = [r for r in rows if r["run"] == run]
        t = [x_value(r, x) for r in pts]
        ax1.plot(t, [r["fid"] for r in pts], "o-", label=run_label(pts))
        if pts[0]["coverage"]:
            ax2.plot(t, [r["coverage"]["classes_in_range"] for r in pts], "o-", label=run_label(pts))
    label = {"time": "training wall time (min)", "epoch": "epoch", "step": "updates"}[x]
    ax1.set_xlabel(label)
    ax1.set_ylabel(f"FID ({fid_samples} samples)")
    ax2.set_xlabel(label)
    ax2.set_ylabel("classes with 4-20 % of samples")
    ax2.set_ylim(0, 10.5)
    ax1.legend(fontsize=7)
    fig.suptitle(hw, fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=120)


def markdown_table(best: list[dict]) -> str:
    """One line per run: its minimum FID over the re-scored checkpoints, the epoch, and the curve's FID there."""
    lines = ["| run | model | min FID | samples | epoch | step | curve FID there | classes in 4-20 % |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for b in best:
        cov = b["coverage"]["classes_in_range"] if b["coverage"] else "-"
        lines.append(f"| {run_label([b])} | {b['model']} | {b['fid']:.2f} | {b['fid_samples']} | "
                     f"{(b['epoch'] or 0) + 1} | {b['global_step']} | {b['fid_curve']:.2f} | {cov} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="*", help="run folders (each with checkpoints/); FOLDER1+FOLDER2 for a run resumed "
                   "into another folder")
    p.add_argument("--fid-samples", type=int, default=2000)
    p.add_argument("--coverage-samples", type=int, default=1000)
    p.add_argument("--num-steps", type=int, default=1000, help="Gibbs sweeps when the run has no trained sampling")
    p.add_argument("--fid-weights", default=None)
    p.add_argument("--data-root", default=None)
    p.add_argument("--every", type=int, default=1, help="evaluate every n-th checkpoint (the last always)")
    p.add_argument("--out", required=True, help="output path without extension (.json and .png are written)")
    p.add_argument("--output", default=None, help="read the samples out this way (sample, mean, mode, ...) "
                   "instead of the machine's own read-out")
    p.add_argument("--x", choices=("time", "epoch", "step"), default="time", help="the plot's abscissa")
    p.add_argument("--rescore", type=int, default=0, help="re-score the K lowest-FID checkpoints of each run")
    p.add_argument("--rescore-samples", type=int, default=10000)
    p.add_argument("--replot", type=Path, default=None, help="draw <out>.png from this JSON of an earlier run (no sampling)")
    a = p.parse_args(argv)
    if a.replot is not None:
        saved = json.loads(a.replot.read_text())
        fid_samples = saved["rows"][0]["fid_samples"] if saved["rows"] else a.fid_samples
        plot(saved["rows"], Path(a.out).with_suffix(".png"), fid_samples, saved["hardware"], a.x)
        print(f"wrote {Path(a.out).with_suffix('.png')}")
        return 0
    if not a.runs:
        p.error("give run folders to score (or --replot JSON to redraw an earlier result)")

    from qidbm.checkpoint import load_checkpoint, read_checkpoint
    from qidbm.data import datamodule_from_info
    from qidbm.images import visible_to_images
    from qidbm.metrics import frechet_distance, reference_stats
    from qidbm.metrics.classifier import class_coverage
    from qidbm.metrics.fid import FIDAccumulator
    from qidbm.samplers.drawing import SamplingSpec, draw, trained_sampling

    acc = FIDAccumulator(a.fid_weights, batch_size=50, device="cpu", progress=False, fuse_bn=True)
    dms: dict = {}

    def score(f: Path, n: int, seed: int) -> dict:
        """FID of ``n`` samples (generator seed ``seed``) of checkpoint ``f``, and class coverage."""
        model, info = load_checkpoint(f)
        di = info["data_info"]
        key = (di["dataset"], di["encoding"])
        if key not in dms:
            dms[key] = datamodule_from_info(di, a.data_root)
            dms[key].setup("fit")
        dm = dms[key]
        spec = trained_sampling(info.get("hyper_parameters"), model.gaussian_visible) or SamplingSpec(num_steps=a.num_steps)
        if a.output is not None:
            spec = replace(spec, output=a.output)
        t0 = time.time()
        images = visible_to_images(draw(model, n, spec, generator=torch.Generator().manual_seed(seed))[0], di)
        t_sample = time.time() - t0
        ref = {"dataset": di["dataset"], "split": "test", "encoding": di["encoding"],
               "preprocessing": di.get("preprocessing")}
        mu_r, sigma_r = reference_stats(ref, dm.test_images, accumulator=acc)
        acc.reset()
        mu, sigma = acc.update(images).compute_stats()
        cov = class_coverage(images[: a.coverage_samples], di["dataset"]) if di["dataset"] in ("MNIST", "FashionMNIST") else None
        return {"fid": float(frechet_distance(mu, sigma, mu_r, sigma_r, method="eigh")), "fid_samples": n,
                "sampling": spec.describe(), "sampling_seconds": round(t_sample, 1), "coverage": cov,
                "model": info["model_class"]}

    rows, best = [], []
    for run in a.runs:
        files = run_checkpoints(run)
        files = [f for i, f in enumerate(files) if i % a.every == 0 or i == len(files) - 1]
        t_first = run_start(Path(run.split("+")[0]))
        run_rows = []
        for f in files:
            raw = read_checkpoint(f, map_location="cpu")
            secs = training_seconds(raw)
            if secs is None:
                t_first = t_first or f.stat().st_mtime
                secs = f.stat().st_mtime - t_first
            row = {"run": str(run), "checkpoint": f.name, "global_step": raw.get("global_step"),
                   "epoch": raw.get("epoch"), "train_seconds": round(secs, 1), **score(f, a.fid_samples, 0)}
            run_rows.append(row)
            cov = row["coverage"]
            print(f"{Path(run.split('+')[-1]).name} {f.name} epoch {row['epoch']} step {row['global_step']} {secs / 60:.1f} min: "
                  f"FID {row['fid']:.2f}"
                  + (f", classes in 4-20 %: {cov['classes_in_range']}/10, KL {cov['kl_from_uniform']:.3f}" if cov else ""),
                  flush=True)
        rows += run_rows
        if a.rescore > 0:
            again = []
            for f, r in sorted(zip(files, run_rows), key=lambda fr: fr[1]["fid"])[: a.rescore]:
                res = score(f, a.rescore_samples, 1)
                again.append({**{k: r[k] for k in ("run", "checkpoint", "global_step", "epoch", "train_seconds")},
                              **res, "fid_curve": r["fid"]})
                print(f"  re-scored {r['checkpoint']} on {a.rescore_samples} samples: FID {res['fid']:.2f}", flush=True)
            best.append(min(again, key=lambda r: r["fid"]) | {"rescored": again})
    hw = f"{platform.machine()} {platform.processor() or ''}, torch {torch.__version__}, {torch.get_num_threads()} threads"
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(
        {"command": "python scripts/quality_curve.py " + " ".join(argv if argv is not None else sys.argv[1:]),
         "hardware": hw, "rows": rows, "best": best}, indent=2))
    plot(rows, out.with_suffix(".png"), a.fid_samples, hw, a.x)
    if best:
        print(markdown_table(best))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
