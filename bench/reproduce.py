"""Reproduce the DO-EM paper's comparisons: train with identical hyperparameters, evaluate FID.

Suites (each run is `qidbm fit` on a shipped config, then `qidbm evaluate` on its last
checkpoint, both as subprocesses, so every row is reproducible by the printed commands):

* ``binary``: DBM vs QiDBM on binarised MNIST at 498, 588, 686, 784 units per hidden layer
  (configs/paper/mnist_binary_{dbm,qidbm}_{size}.yaml);
* ``grbm``: GRBM vs QGRBM on MNIST and Fashion-MNIST (configs/paper/*_{grbm,qgrbm}.yaml);
* ``study``: at one size, DBM, QiDBM (paper step), QiDBM (exact step) and QiDBM with coupled
  transverse fields, with FID, AIS test log-likelihood, acceptance rate and seconds/epoch.

``--budget cpu`` shortens training (``--epochs``, default 2) and FID (``--fid-samples``,
default 2000) so a suite finishes in minutes to an hour on a CPU; ``--budget gpu`` runs the
paper's schedule (100 epochs, 10,000 samples). Results: ``bench/results/<suite>.json``,
``.md`` (a table with the command for every row) and ``.png`` (FID against parameters).

    python bench/reproduce.py --suite binary --budget cpu --sizes 498
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
PAPER_FID = {("dbm", "binary"): 42.61, ("qidbm", "binary"): 14.77}


def hardware() -> str:
    import torch

    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"{os.cpu_count()}-core CPU, no GPU"
    return f"{dev}, {platform.processor() or platform.machine()}, torch {torch.__version__}"


def run(cmd: list[str], log: Path) -> float:
    t0 = time.time()
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        print("$", shlex.join(cmd), flush=True)
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO)
    if proc.returncode != 0:
        tail = log.read_text()[-3000:]
        raise RuntimeError(f"command failed ({proc.returncode}): {shlex.join(cmd)}\n{tail}")
    return time.time() - t0


def relocate_config(config: Path, run_dir: Path, write: bool = True) -> Path:
    """The shipped config with every output path (root dir, loggers, checkpoints, samples)
    moved under ``run_dir``, so that runs sharing a config do not overwrite each other."""
    import yaml

    if not write:
        return run_dir / "config.yaml"
    c = yaml.safe_load(config.read_text())
    t = c.setdefault("trainer", {})
    old = str(t.get("default_root_dir", ""))
    t["default_root_dir"] = str(run_dir)

    def move(path: str) -> str:
        return str(run_dir / Path(path).relative_to(old)) if old and path.startswith(old) else str(run_dir / Path(path).name)

    for entry in (t.get("logger") or []) + (t.get("callbacks") or []):
        args = entry.get("init_args", {})
        for k in ("save_dir", "dirpath"):
            if k in args:
                args[k] = move(args[k])
    run_dir.mkdir(parents=True, exist_ok=True)
    out = run_dir / "config.yaml"
    out.write_text(f"# generated from {config.relative_to(REPO)} by bench/reproduce.py\n" + yaml.safe_dump(c, sort_keys=False))
    return out


def fit_command(r: dict, out_dir: Path, epochs: int, a) -> list[str]:
    run_dir = out_dir / r["name"]
    cfg = relocate_config(REPO / r["config"], run_dir, write=not a.skip_fit)
    fit = ["qidbm", "fit", "--config", str(cfg), *r["overrides"], "--trainer.max_epochs", str(epochs),
           "--trainer.enable_progress_bar", "false"]
    for opt, val in (("lr", a.lr), ("momentum", a.momentum), ("negative_start", a.negative_start)):
        if val is not None:
            fit += [f"--model.init_args.{opt}", str(val)]
    for kv in a.set:
        key, _, val = kv.partition("=")
        fit += [f"--model.init_args.{key}", val]
    if a.limit_train_batches is not None:
        fit += ["--trainer.limit_train_batches", str(a.limit_train_batches)]
    if a.device != "cpu":
        fit += ["--trainer.accelerator", "gpu", "--trainer.devices", "1"]
    return fit


def n_params(config: dict) -> int:
    from qidbm.models import build_model

    m = build_model(config["class"], config["args"])
    return sum(p.numel() for p in m.parameters())


def plan(suite: str, sizes: list[int], configs: str = "paper") -> list[dict]:
    rows = []
    if suite == "binary":
        for size in sizes:
            for kind in ("dbm", "qidbm"):
                rows.append({"name": f"{kind}_{size}", "kind": kind, "size": size,
                             "config": f"configs/{configs}/mnist_binary_{kind}_{size}.yaml", "overrides": []})
    elif suite == "grbm":
        for ds in ("mnist", "fashion_mnist"):
            for kind in ("grbm", "qgrbm"):
                rows.append({"name": f"{ds}_{kind}", "kind": kind, "dataset": ds,
                             "config": f"configs/{configs}/{ds}_{kind}.yaml", "overrides": []})
    elif suite == "study":
        size = sizes[0]
        q = "--model.init_args.model.init_args"
        for name, kind, ov in (
            ("dbm", "dbm", []),
            ("qidbm_paper", "qidbm", ["--model.init_args.quantum_step", "paper"]),
            ("qidbm_exact", "qidbm", ["--model.init_args.quantum_step", "exact"]),
            ("qidbm_coupled", "qidbm", [f"{q}.coupled_field", "true"]),
        ):
            rows.append({"name": f"{name}_{size}", "kind": kind, "size": size,
                         "config": f"configs/{configs}/mnist_binary_{kind}_{size}.yaml", "overrides": ov})
    else:
        raise ValueError(f"unknown suite {suite!r}")
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", choices=["binary", "grbm", "study"], default="binary")
    p.add_argument("--budget", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--configs", choices=["paper", "cpu"], default="paper",
                   help="configs/paper (the paper's recipe) or configs/cpu (the CPU-budget recipe: batch 100, PCD, 3 epochs)")
    p.add_argument("--jobs", type=int, default=1, help="trainings run in parallel (one torch thread each when > 1)")
    p.add_argument("--sizes", type=int, nargs="+", default=[498, 588, 686, 784])
    p.add_argument("--epochs", type=int, default=None, help="training epochs (cpu default 2, gpu 100)")
    p.add_argument("--limit-train-batches", type=float, default=None, help="fraction/number of batches per epoch")
    p.add_argument("--fid-samples", type=int, default=None, help="generated images for FID (cpu 2000, gpu 10000)")
    p.add_argument("--sample-steps", type=int, default=1000, help="Gibbs sweeps per FID sample")
    p.add_argument("--quantum-step", choices=["paper", "exact"], default="paper", help="evaluation quantum step")
    p.add_argument("--ais-runs", type=int, default=0, help="AIS chains for the log-likelihood (0: skip)")
    p.add_argument("--ais-betas", type=int, default=10000)
    p.add_argument("--fid-weights", default=os.environ.get("QIDBM_FID_WEIGHTS"))
    p.add_argument("--lr", type=float, default=None, help="override the configs' learning rate (all runs alike)")
    p.add_argument("--momentum", type=float, default=None, help="override the SGD momentum (all runs alike)")
    p.add_argument("--negative-start", default=None, help="override negative_start (all runs alike)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any BoltzmannModule argument for all runs alike, e.g. persistent_update=sweep")
    p.add_argument("--skip-fit", action="store_true", help="evaluate the checkpoints of an earlier run of the same suite")
    p.add_argument("--tag", default="", help="suffix of the results files")
    p.add_argument("--device", default="cpu")
    a = p.parse_args(argv)
    epochs = a.epochs or (2 if a.budget == "cpu" else 100)
    fid_n = a.fid_samples or (2000 if a.budget == "cpu" else 10000)
    tag = f"{a.suite}_{a.budget}{'' if a.configs == 'paper' else '_' + a.configs}{('_' + a.tag) if a.tag else ''}"
    out_dir = RESULTS / tag
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = plan(a.suite, a.sizes, a.configs)
    results = []
    fits = {}
    if a.jobs > 1 and not a.skip_fit:  # train in parallel first; evaluation below then finds the checkpoints
        from concurrent.futures import ThreadPoolExecutor

        os.environ.setdefault("OMP_NUM_THREADS", "1")
        with ThreadPoolExecutor(a.jobs) as pool:
            futs = {r["name"]: pool.submit(run, fit_command(r, out_dir, epochs, a), out_dir / r["name"] / "fit.log")
                    for r in rows}
            fits = {k: f.result() for k, f in futs.items()}
    def evaluate_command(r: dict) -> list[str]:
        run_dir = out_dir / r["name"]
        ev = ["qidbm", "evaluate", "--ckpt", str(run_dir / "checkpoints" / "last.ckpt"), "--num-samples", str(fid_n),
              "--num-steps", str(a.sample_steps), "--quantum-step", a.quantum_step, "--ais-runs", str(a.ais_runs),
              "--ais-betas", str(a.ais_betas), "--ais-test-examples", "2000", "--json", str(run_dir / "evaluate.json"),
              "--save-samples", str(run_dir / "samples"), "--device", a.device]
        return ev + (["--fid-weights", a.fid_weights] if a.fid_weights else [])

    def fit_and_evaluate(r: dict) -> dict:
        run_dir = out_dir / r["name"]
        fit = fit_command(r, out_dir, epochs, a)
        if a.skip_fit:  # the fit's duration from its files: config written at start, log closed at the end
            t_fit = (run_dir / "fit.log").stat().st_mtime - (run_dir / "config.yaml").stat().st_mtime
        else:
            t_fit = fits[r["name"]] if r["name"] in fits else run(fit, run_dir / "fit.log")
        ev = evaluate_command(r)
        t_eval = run(ev, run_dir / "evaluate.log")
        res = json.loads((run_dir / "evaluate.json").read_text())
        res.update(name=r["name"], kind=r["kind"], config=r["config"], overrides=r["overrides"], size=r.get("size"),
                   dataset=r.get("dataset"), epochs=epochs, fit_seconds=round(t_fit, 1), eval_seconds=round(t_eval, 1),
                   seconds_per_epoch=round(t_fit / epochs, 1),
                   params=n_params({"class": res["model"], "args": res["model_config"]}),
                   fit_command=shlex.join(fit), evaluate_command=shlex.join(ev))
        print(f"{r['name']}: FID {res.get('fid', float('nan')):.2f} ({t_fit:.0f} s fit, {t_eval:.0f} s evaluate)", flush=True)
        return res

    if a.jobs > 1 and (a.skip_fit or fits):  # checkpoints exist: evaluate in parallel
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(a.jobs) as pool:
            results = list(pool.map(fit_and_evaluate, rows))
    else:
        results = [fit_and_evaluate(r) for r in rows]
    (RESULTS / f"{tag}.json").write_text(json.dumps({"hardware": hardware(), "argv": sys.argv, "results": results}, indent=2))
    write_report(tag, results, a, epochs, fid_n)
    return 0


def write_report(tag: str, results: list[dict], a, epochs: int, fid_n: int) -> None:
    lines = [f"# {tag}", "", f"Hardware: {hardware()}", "",
             f"Command: `python bench/reproduce.py {' '.join(sys.argv[1:])}`", "",
             f"Training: {epochs} epochs; FID: {fid_n} samples vs the 10,000 test images, "
             f"{a.sample_steps} Gibbs sweeps from noise, conditional mean output, {a.quantum_step} quantum step.", "",
             "| run | params | FID | paper FID | test LL (nats) | acceptance | s/epoch |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        paper = PAPER_FID.get((r["kind"], "binary")) if a.suite == "binary" else None
        acc = next((v for k, v in r.items() if k.startswith("acceptance_layer")), None)
        ll = r.get("test_log_likelihood")
        lines.append(
            f"| {r['name']} | {r['params']:,} | {r.get('fid', float('nan')):.2f} | "
            f"{'' if paper is None else f'{paper} (best of 4 sizes)'} | {'' if ll is None else f'{ll:.2f}'} | "
            f"{'' if acc is None else f'{acc:.3f}'} | {r['seconds_per_epoch']} |"
        )
    lines += ["", "Commands:", ""] + [f"- {r['name']}: `{r['fit_command']}` then `{r['evaluate_command']}`" for r in results]
    (RESULTS / f"{tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.5))
        for kind in sorted({r["kind"] for r in results}):
            pts = sorted((r["params"], r["fid"]) for r in results if r["kind"] == kind and "fid" in r)
            if pts:
                ax.plot(*zip(*pts), "o-", label=kind)
        ax.set_xlabel("parameters")
        ax.set_ylabel(f"FID ({fid_n} samples)")
        ax.set_title(tag)
        ax.legend()
        fig.tight_layout()
        fig.savefig(RESULTS / f"{tag}.png", dpi=120)
    except Exception as e:  # plotting is a convenience
        print(f"(plot skipped: {e})")


if __name__ == "__main__":
    sys.exit(main())
