"""The DO-EM paper's DBM vs QiDBM schedule on a lent GPU, inside one 10-minute call of the device tool.

The paper trains 784-498-498 DBM and QiDBM on binarised MNIST with Taniguchi et al.'s estimator
(``configs/paper/mnist_binary/``: batch 600, SGD, 100 "epochs"; Taniguchi et al.'s epoch is 1,000
updates, so about 100,000 updates) and reports the best FID of 10,000 samples. One device call
cannot hold that, so this script trains each model for ``--minutes`` of wall time
(``trainer.max_time``), evaluates its last checkpoint by the paper preset of ``qidbm evaluate``
(10,000 samples; Taniguchi et al.'s sampler and 1,000 Gibbs sweeps from noise), and states the
fraction of the paper's schedule it reached (updates / 100,000). Everything goes under ``--out``
(``$OUT`` on the device): the runs, ``device_paper.json`` and ``device_paper.md``.

On the device (the package from the working tree, the data and FID weights carried or found
through the environment)::

    PYTHONUNBUFFERED=1 QIDBM_DATA_DIR=... QIDBM_FID_WEIGHTS=... python3 scripts/device_paper.py --out $OUT --minutes 3.5

Two models x (3.5 min training + about 40 s evaluation) fits the 10-minute limit with margin for
start-up. ``--tiny`` (784-16-16, a few updates, no FID) checks the logic on a CPU in seconds
(``tests/test_device_paper.py``).

``--recipe celeba32`` does the same for the GRBM vs QGRBM paper recipe on CelebA 32x32
(``configs/paper/grbm/``: 3072-4096, Gibbs-Langevin from noise, batch 512, 200 epochs of the
162,770 training images = 63,600 updates), evaluated by the trained protocol (noise, the trained
sweeps, conditional mean) on 10,000 samples against the CelebA test images. It needs the CelebA files
in torchvision's layout under ``$QIDBM_DATA_DIR/celeba`` on the device::

    PYTHONUNBUFFERED=1 QIDBM_DATA_DIR=... QIDBM_FID_WEIGHTS=... python3 scripts/device_paper.py --recipe celeba32 --out $OUT --minutes 3.5

``--recipe mnist_grbm`` and ``--recipe fashion_mnist_grbm`` run the same paper recipe (784-4096) on
continuous MNIST and Fashion-MNIST (200 epochs of 60,000 images at batch 512 = 23,600 updates), against
their 10,000 test images.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from reproduce import config_files, hardware, relocation_config, run  # noqa: E402

GRBM_TINY = ["--model.init_args.model.init_args.n_hidden", "8", "--model.init_args.negative.init_args.sweeps", "2",
             "--data.init_args.batch_size", "4"]

# Per recipe: its config folder, models, run name, the paper's number of updates and FIDs, the
# evaluation options beyond the common ones, and the overrides that shrink it to a CPU logic check.
RECIPES = {
    "mnist_binary": {
        "configs": "paper/mnist_binary", "models": ("dbm", "qidbm"), "run": "{kind}_{size}",
        "paper_updates": 100_000, "paper_fid": {"dbm": 42.61, "qidbm": 14.77}, "evaluate": ["--preset", "paper"],
        "tiny": ["--model.init_args.model.init_args.layer_sizes", "[784,16,16]"],
    },
    "celeba32": {
        "configs": "paper/grbm", "models": ("grbm", "qgrbm"), "run": "celeba32_{kind}",
        "paper_updates": 200 * -(-162_770 // 512), "paper_fid": {}, "evaluate": [],
        "tiny": GRBM_TINY,
    },
    "mnist_grbm": {
        "configs": "paper/grbm", "models": ("grbm", "qgrbm"), "run": "mnist_{kind}",
        "paper_updates": 200 * -(-60_000 // 512), "paper_fid": {}, "evaluate": [], "tiny": GRBM_TINY,
    },
    "fashion_mnist_grbm": {
        "configs": "paper/grbm", "models": ("grbm", "qgrbm"), "run": "fashion_mnist_{kind}",
        "paper_updates": 200 * -(-60_000 // 512), "paper_fid": {}, "evaluate": [], "tiny": GRBM_TINY,
    },
}


def fit_command(kind: str, size: int, run_dir: Path, a: argparse.Namespace) -> list[str]:
    recipe = RECIPES[a.recipe]
    configs = config_files(recipe["configs"], recipe["run"].format(kind=kind, size=size))
    cmd = [sys.executable, "-m", "qidbm.cli", "fit"]
    for f in [*configs, str(relocation_config(configs, run_dir))]:
        cmd += ["--config", f]
    seconds = int(a.minutes * 60)
    cmd += ["--trainer.max_time", f"00:00:{seconds // 60:02d}:{seconds % 60:02d}", "--trainer.max_epochs", "-1",
            "--trainer.enable_progress_bar", "false", "--seed_everything", str(a.seed)]
    if a.matmul_precision != "float32":
        cmd += ["--model.init_args.matmul_precision", a.matmul_precision]
    if a.tiny:
        cmd += [*recipe["tiny"], "--trainer.max_steps", "3", "--trainer.limit_train_batches", "3"]
        if kind == "qidbm":
            cmd += ["--model.init_args.model.init_args.quantum_layers", "[1]"]
    return cmd


def evaluate_command(run_dir: Path, a: argparse.Namespace) -> list[str]:
    cmd = [sys.executable, "-m", "qidbm.cli", "evaluate", "--ckpt", str(run_dir / "checkpoints" / "last.ckpt"),
           "--json", str(run_dir / "evaluate.json"), "--save-samples", str(run_dir / "samples_eval"),
           "--ais-runs", "0", "--device", a.device]
    if a.tiny:
        return cmd + ["--no-fid", "--num-samples", "20", "--copy-samples", "0"]
    cmd += [*RECIPES[a.recipe]["evaluate"], "--num-samples", str(a.fid_samples)]
    return cmd + (["--fid-weights", a.fid_weights] if a.fid_weights else [])


def updates_of(ckpt: Path) -> int:
    import torch

    return int(torch.load(ckpt, map_location="cpu", weights_only=False).get("global_step", 0))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.environ.get("OUT"), help="results folder (default $OUT)")
    p.add_argument("--recipe", choices=sorted(RECIPES), default="mnist_binary")
    p.add_argument("--minutes", type=float, default=3.5, help="training wall time per model")
    p.add_argument("--models", nargs="+", choices=sorted({m for r in RECIPES.values() for m in r["models"]}),
                   default=None, help="default: the recipe's two models")
    p.add_argument("--size", type=int, default=498, choices=[498, 588, 686, 784], help="hidden layer size (mnist_binary)")
    p.add_argument("--fid-samples", type=int, default=10000)
    p.add_argument("--fid-weights", default=os.environ.get("QIDBM_FID_WEIGHTS"))
    p.add_argument("--matmul-precision", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="evaluation device (default: cuda when available)")
    p.add_argument("--tiny", action="store_true", help="784-16-16, 3 updates, no FID: a logic check for CPUs")
    a = p.parse_args(argv)
    if not a.out:
        p.error("give --out (on the device tool, $OUT is set)")
    if a.minutes <= 0:
        p.error("--minutes must be positive")
    recipe = RECIPES[a.recipe]
    a.models = a.models or list(recipe["models"])
    if not set(a.models) <= set(recipe["models"]):
        p.error(f"--recipe {a.recipe} trains {' and '.join(recipe['models'])}, not {' '.join(a.models)}")
    paper_updates = recipe["paper_updates"]
    import torch

    a.device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if not a.tiny and a.device == "cpu":
        print("warning: no GPU here; the paper schedule on a CPU gets a small fraction done", file=sys.stderr)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for kind in a.models:
        run_dir = out / recipe["run"].format(kind=kind, size=a.size)
        fit = fit_command(kind, a.size, run_dir, a)
        t_fit = run(fit, run_dir / "fit.log")
        ev = evaluate_command(run_dir, a)
        t_eval = run(ev, run_dir / "evaluate.log")
        res = json.loads((run_dir / "evaluate.json").read_text())
        n = updates_of(run_dir / "checkpoints" / "last.ckpt")
        row = {"model": kind, "run": run_dir.name, "updates": n, "fraction_of_paper_schedule": n / paper_updates,
               "fit_seconds": round(t_fit, 1), "evaluate_seconds": round(t_eval, 1), "paper_fid": recipe["paper_fid"].get(kind),
               "fit_command": shlex.join(fit), "evaluate_command": shlex.join(ev), "evaluate": res}
        rows.append(row)
        print(f"{kind}: {n} updates ({100 * n / paper_updates:.1f} % of the paper's), FID {res.get('fid')}", flush=True)
    result = {"hardware": hardware(), "argv": sys.argv[1:] if argv is None else argv, "recipe": a.recipe, "minutes_per_model": a.minutes,
              "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "rows": rows}
    (out / "device_paper.json").write_text(json.dumps(result, indent=1))
    title = " vs ".join(m.upper().replace("QI", "Qi") for m in a.models)
    lines = [f"# {title}, the paper's {a.recipe} recipe, {a.minutes} min of training each", "", f"Hardware: {result['hardware']}", "",
             f"| run | updates | % of the paper's {paper_updates:,} | FID (first sampling) | paper FID | fit s | evaluate s |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        fid = r["evaluate"].get("fid")
        lines.append(f"| {r['run']} | {r['updates']} | {100 * r['fraction_of_paper_schedule']:.1f} | "
                     f"{'-' if fid is None else f'{fid:.2f}'} | {r['paper_fid'] or '-'} | {r['fit_seconds']} | {r['evaluate_seconds']} |")
    lines += ["", *[f"- `{r['fit_command']}`\n- `{r['evaluate_command']}`" for r in rows]]
    (out / "device_paper.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
