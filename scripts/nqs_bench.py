"""Benchmark of the RBM neural-network quantum state: energies with error bars.

Every run is exactly ``qidbm fit --config configs/nqs_*.yaml [overrides]`` (a subprocess), so
the published numbers come from the same path a user runs. Each run trains, then evaluates the
final wave function on fresh chains (blocking error bar) and writes ``nqs_result.json``; this
script collects them into ``bench/results/nqs.md`` (the table docs/nqs.md shows) and copies the
energy / one-body-density plots to ``bench/results/nqs_<run>_{energy,density}.png``.

    python scripts/nqs_bench.py                 # all runs (~10 min on a shared 2-core CPU)
    python scripts/nqs_bench.py --only qdot2d-rbm-jastrow
    python scripts/nqs_bench.py --quick         # smoke test: 20 steps each, not for publishing
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
HO = "configs/nqs_ho2d_noninteracting.yaml"
QD = "configs/nqs_qdot2d_rbm.yaml"
QDJ = "configs/nqs_qdot2d_rbm_jastrow.yaml"
IMPORTANCE = ["--model.sampler=qidbm.nqs.MetropolisHastingsSampler", "--model.sampler.time_step=0.5"]

# name, config, overrides, system, ansatz, sampler, optimizer
RUNS = [
    ("ho2d-metropolis-sr", HO, [], "N=2, d=2, omega=1, no interaction", "RBM H=4", "Metropolis", "SR + SGD"),
    (
        "ho2d-importance-sr", HO, IMPORTANCE,
        "N=2, d=2, omega=1, no interaction", "RBM H=4", "Metropolis-Hastings (drift)", "SR + SGD",
    ),
    (
        "ho2d-gibbs-sr", HO, ["--model.sampler=qidbm.nqs.GibbsSampler"],
        "N=2, d=2, omega=1, no interaction", "RBM H=4", "Gibbs", "SR + SGD",
    ),
    (
        "ho2d-metropolis-adam", HO,
        ["--model.sr=false", "--model.optimizer=adam", "--model.lr=0.02", "--trainer.max_steps=1000"],
        "N=2, d=2, omega=1, no interaction", "RBM H=4", "Metropolis", "Adam (plain VMC gradient)",
    ),
    ("qdot2d-rbm", QD, [], "N=2, d=2, omega=1, Coulomb", "RBM H=8, s^2 trained", "Metropolis", "SR + SGD"),
    (
        "qdot2d-rbm-course", QD, ["--model.wavefunction.form=amplitude", "--model.wavefunction.train_variance=false"],
        "N=2, d=2, omega=1, Coulomb", "RBM H=8, Psi = P, s = 1 fixed (course)", "Metropolis", "SR + SGD",
    ),
    ("qdot2d-rbm-jastrow", QDJ, [], "N=2, d=2, omega=1, Coulomb", "RBM H=8 x Pade-Jastrow", "Metropolis", "SR + SGD"),
    (
        "qdot2d-gaussian-jastrow", QDJ, ["--model.wavefunction.gaussian_only=true"],
        "N=2, d=2, omega=1, Coulomb", "Gaussian x Pade-Jastrow (no hidden units: baseline)", "Metropolis", "SR + SGD",
    ),
    (
        "qdot2d-rbm-jastrow-importance", QDJ, IMPORTANCE,
        "N=2, d=2, omega=1, Coulomb", "RBM H=8 x Pade-Jastrow", "Metropolis-Hastings (drift)", "SR + SGD",
    ),
]


def hardware() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()}-core CPU ({cpu}), {gpu}, torch {torch.__version__}, Python {platform.python_version()}"


def run_one(name, config, overrides, quick, out_root):
    out = out_root / name
    if out.exists():
        shutil.rmtree(out)
    cmd = ["qidbm", "fit", "--config", config, *overrides]
    extra = [
        f"--trainer.callbacks.out_dir={out}",  # the FinalEvaluation callback of the config
        f"--trainer.logger.init_args.save_dir={out_root / 'logs'}",
        f"--trainer.logger.init_args.name={name}",
        "--trainer.enable_progress_bar=false",
    ]
    if quick:
        extra += ["--trainer.max_steps=20", "--trainer.callbacks.n_samples=64", "--model.burn_in=20"]
    print(f"\n=== {name}: {shlex.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd + extra, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-5000:], sep="\n")
        raise SystemExit(f"run {name} failed (exit {proc.returncode})")
    res = json.loads((out / "nqs_result.json").read_text())
    res["process_wall_s"] = wall
    res["command"] = shlex.join(cmd)
    print(
        f"E = {res['energy']:.6f} +- {res['energy_err']:.6f} (exact {res['exact']}), var(E_L) = {res['variance']:.3e}, "
        f"acceptance {res['acceptance']:.3f}, train {res['train_wall_s']:.1f} s, eval {res['eval_wall_s']:.1f} s",
        flush=True,
    )
    return res, out


def fmt_row(name, system, ansatz, sampler, optim, r):
    exact = r["exact"]
    dev = "" if exact is None or r["energy_err"] == 0 else f"{(r['energy'] - exact) / r['energy_err']:+.1f}"
    rel = "" if exact is None else f"{100 * r['rel_error']:+.4f}%"
    return (
        f"| {name} | {system} | {ansatz} | {sampler} | {optim} | {r['train_steps']} | "
        f"{r['energy']:.6f} ± {r['energy_err']:.6f} | {exact} | {rel} | {dev} | {r['variance']:.2e} | "
        f"{r['acceptance']:.3f} | {r['train_wall_s']:.0f} | {r['eval_wall_s']:.0f} | `{r['command']}` |"
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", help="run names to run (default: all)")
    ap.add_argument("--quick", action="store_true", help="20 steps each (smoke test; does not write nqs.md)")
    ap.add_argument("--out", default="runs/nqs_bench", help="run folder (default runs/nqs_bench)")
    args = ap.parse_args(argv)
    runs = [r for r in RUNS if not args.only or r[0] in args.only]
    if not runs:
        raise SystemExit(f"no run matches {args.only}; known: {[r[0] for r in RUNS]}")
    out_root = (ROOT / args.out).resolve()
    hw = hardware()
    print("hardware:", hw)
    rows = []
    plots = ROOT / "bench" / "results"
    plots.mkdir(parents=True, exist_ok=True)
    for name, config, overrides, system, ansatz, sampler, optim in runs:
        res, out = run_one(name, config, overrides, args.quick, out_root)
        rows.append(fmt_row(name, system, ansatz, sampler, optim, res))
        for kind in ("energy", "density"):
            src = out / f"{kind}.png"
            if src.exists():
                shutil.copy(src, plots / f"nqs_{name}_{kind}.png")
        (plots / f"nqs_{name}.json").write_text(json.dumps(res, indent=2, default=str))
    if args.quick:
        print("\n".join(rows))
        return
    header = [
        "# Neural-network quantum states: RBM wave functions by variational Monte Carlo",
        "",
        f"Generated by `python scripts/nqs_bench.py` (single rows re-run with `--only NAME`), last run "
        f"{dt.date.today()}; hardware: {hw}. Each row is the listed `qidbm fit` command (single seed, "
        "`seed_everything: 0`); the energy is from a separate evaluation of the final wave function on "
        "256 fresh chains x 4096 sweeps (1,048,576 samples), error bar = blocking (Flyvbjerg-Petersen "
        "with Jonsson's automatic plateau) of the chain-averaged series. `dev` = (E - exact) / error. "
        "Wall times are on a CPU shared with other jobs (upper bounds).",
        "",
        "| run | system | ansatz | sampler | optimizer | steps | energy ± blocking error | exact | rel. error | dev | var(E_L) | acceptance | train s | eval s | command |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    path = plots / "nqs.md"
    existing = path.read_text() if path.exists() and args.only else ""
    if existing:  # partial re-run: replace matching rows, keep the others
        keep = [l for l in existing.splitlines() if l.startswith("| ") and not l.startswith("| run ")]
        names = {r.split("|")[1].strip() for r in rows}
        keep = [l for l in keep if l.split("|")[1].strip() not in names and not l.startswith("| ---")]
        rows = keep + rows
    notes_marker = "\n## Notes\n"
    notes = existing.split(notes_marker, 1)[1] if notes_marker in existing else ""
    text = "\n".join(header + rows) + "\n"
    if notes:
        text += notes_marker + notes
    path.write_text(text)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
