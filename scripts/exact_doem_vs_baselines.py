"""DO-EM vs exact-gradient vs bound-based (Amin et al. 2018) training of a CQ QRBM.

Data: the mixture of Bernoulli of Amin et al. / DO-EM Appendix D.2 (M = 8 modes, p = 0.9),
used through its exact probabilities; every likelihood is exact (enumerated).
Model: the CQ QRBM of docs/maths.md, 'Spin-convention map' (spin convention, Z fields, visible-hidden ZZ,
transverse field on the hidden qubits), initial parameters uniform in [-0.1, 0.1] with the
transverse fields at 0.5 (kept fixed by the bound-based method, as in Amin et al.).

Methods (each run in a fresh process so that its peak resident memory can be measured):

* ``doem``          - DO-EM Algorithm 2 (block-wise E-step, L-BFGS M-step to max|grad| <= 1e-6);
* ``exact_dense``   - gradient ascent on the exact log-likelihood, dense Daleckii-Krein gradient;
* ``bound_dense``   - bound-based QBM (Amin et al.), dense negative phase, Gamma fixed;
* ``exact_blocks``  - the same exact gradient computed block-wise (identical iterates to
  ``exact_dense``; shows how much of the gap is the dense representation).

Outputs ``bench/results/exact_doem_vs_baselines.json`` and PNG plots, prints markdown tables.
Usage: ``python scripts/exact_doem_vs_baselines.py [--quick]``.
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from qidbm.exact import (  # noqa: E402
    MixtureOfBernoulli,
    cq_qrbm_hamiltonian,
    do_em_cq,
    train_bound_qbm,
    train_exact_gradient,
)

METHODS = ("doem", "exact_dense", "bound_dense", "exact_blocks")


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _init(ham, seed: int, gamma0: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(1000 + seed)
    theta = ham.random_theta(g, scale=0.1)
    start, shape = ham.groups["h_x_hidden"]
    theta[start:start + shape[0]] = gamma0
    return theta


def _train(method: str, ham, theta0, q, spec: dict, iters: int):
    if method == "doem":
        return do_em_cq(ham, theta0, q, iters, m_tol=spec["m_tol"], m_max_iter=spec["m_max_iter"])[1]
    if method == "exact_dense":
        return train_exact_gradient(ham, theta0, q, iters, lr=spec["lr"], method="dense")[1]
    if method == "exact_blocks":
        return train_exact_gradient(ham, theta0, q, iters, lr=spec["lr"], method="blocks")[1]
    if method == "bound_dense":
        return train_bound_qbm(ham, theta0, q, iters, lr=spec["lr"], negative_phase="dense")[1]
    raise ValueError(method)


def run_method(spec: dict) -> dict:
    """Worker: train one method on one (n, m, seed); returns the history and peak memory.

    A one-iteration warm-up on a 2+1 model first, so that one-off library initialisation
    (LAPACK workspaces, optimizer imports) counts neither as time nor as memory.
    """
    torch.set_num_threads(spec["threads"])
    wq = MixtureOfBernoulli(2, n_modes=2, seed=0).probs()
    wh = cq_qrbm_hamiltonian(2, 1)
    _train(spec["method"], wh, _init(wh, 0, spec["gamma0"]), wq, spec, 1)
    n, m, seed = spec["n"], spec["m"], spec["seed"]
    q = MixtureOfBernoulli(n, n_modes=8, p=0.9, seed=seed).probs()
    ham = cq_qrbm_hamiltonian(n, m)
    theta0 = _init(ham, seed, spec["gamma0"])
    try:  # reset the peak-RSS counter (Linux >= 4.0), else fall back to the difference
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    rss0 = _status("VmRSS")
    t0 = time.perf_counter()
    hist = _train(spec["method"], ham, theta0, q, spec, spec["iters"])
    wall = time.perf_counter() - t0
    peak = _status("VmHWM")
    return {**spec, "history": hist.as_dict(), "wall_s": wall, "peak_rss_mb": (peak - rss0) / 2**20,
            "dense_dim": 2 ** (n + m)}


def _run_isolated(pool_ctx, spec: dict) -> dict:
    with pool_ctx.Pool(1, maxtasksperchild=1) as pool:
        return pool.apply(run_method, (spec,))


def time_to_reach(hist: dict, target: float) -> float:
    """First recorded time at which the relative entropy is <= target (inf if never)."""
    for re_, t in zip(hist["relative_entropy"], hist["time"]):
        if re_ <= target + 1e-12:
            return t
    return math.inf


def pick_lr(n: int, m: int, iters: int, gamma0: float, grid: list[float]) -> tuple[float, dict]:
    """Best fixed step for gradient ascent on seed 0 (block-wise exact gradient, same iterates as dense)."""
    q = MixtureOfBernoulli(n, n_modes=8, p=0.9, seed=0).probs()
    ham = cq_qrbm_hamiltonian(n, m)
    theta0 = _init(ham, 0, gamma0)
    finals = {}
    for lr in grid:
        _, h = train_exact_gradient(ham, theta0, q, iters, lr=lr, method="blocks")
        finals[lr] = h.relative_entropy[-1] if math.isfinite(h.relative_entropy[-1]) else math.inf
    best = min(finals, key=lambda k: finals[k])
    return best, {str(k): v for k, v in finals.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-visible", type=int, default=10)
    ap.add_argument("--n-hidden", type=int, default=1)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--iters", type=int, default=12, help="iterations (EM steps / gradient steps) at --n-visible")
    ap.add_argument("--long-iters", type=int, nargs=2, default=[100, 1000],
                    help="iterations of the cheap block-wise long runs: DO-EM, exact gradient")
    ap.add_argument("--lr-grid", type=float, nargs="+", default=[0.03, 0.1, 0.3, 1.0])
    ap.add_argument("--gamma0", type=float, default=0.5)
    ap.add_argument("--m-tol", type=float, default=1e-6)
    ap.add_argument("--m-max-iter", type=int, default=100)
    ap.add_argument("--scale-n", type=int, nargs="*", default=[12, 14, 16, 18, 20],
                    help="visible sizes for the block-wise scaling runs (DO-EM and block exact gradient)")
    ap.add_argument("--scale-iters", type=int, default=5)
    ap.add_argument("--dense-scale-n", type=int, nargs="*", default=[11],
                    help="visible sizes at which the dense baselines are timed for --dense-scale-iters steps")
    ap.add_argument("--dense-scale-iters", type=int, default=1)
    ap.add_argument("--dense-threads", type=int, default=1,
                    help="torch threads for the dense methods (1: on the shared 2-core machine 2 threads were "
                         "erratic, up to 1000x slower on small matrices)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--quick", action="store_true", help="tiny smoke run (n=6, 1 seed, few iterations)")
    args = ap.parse_args(argv)
    if args.quick:
        args.n_visible, args.seeds, args.iters, args.scale_n, args.dense_scale_n = 6, [0], 5, [8], [7]
        args.long_iters = [10, 50]
    args.out.mkdir(parents=True, exist_ok=True)
    ctx = mp.get_context("spawn")
    n, m = args.n_visible, args.n_hidden
    hw = (f"{os.cpu_count()}-core CPU ({platform.processor() or platform.machine()}), no GPU, "
          f"torch {torch.__version__}")
    print(f"hardware: {hw}")

    lr, lr_finals = pick_lr(n, m, args.iters, args.gamma0, args.lr_grid)
    print(f"gradient-ascent step chosen on seed 0 from {args.lr_grid}: lr = {lr} (final KL by lr: {lr_finals})")

    from tqdm.auto import tqdm

    runs = []
    jobs = [(meth, s) for s in args.seeds for meth in METHODS]
    for meth, s in tqdm(jobs, desc=f"n={n} runs"):
        spec = dict(method=meth, n=n, m=m, seed=s, iters=args.iters, lr=lr, gamma0=args.gamma0, m_tol=args.m_tol,
                    m_max_iter=args.m_max_iter, threads=args.dense_threads if "dense" in meth else 1)
        runs.append(_run_isolated(ctx, spec))

    # ---- summary at n
    summary = {}
    for meth in METHODS:
        rs = [r for r in runs if r["method"] == meth]
        summary[meth] = {
            "final_kl_mean": sum(r["history"]["relative_entropy"][-1] for r in rs) / len(rs),
            "final_kl": [r["history"]["relative_entropy"][-1] for r in rs],
            "time_s_mean": sum(r["history"]["time"][-1] for r in rs) / len(rs),
            "time_per_iter_s": sum(r["history"]["time"][-1] / args.iters for r in rs) / len(rs),
            "peak_rss_mb_max": max(r["peak_rss_mb"] for r in rs),
        }
    ratios = {}
    for base in ("exact_dense", "bound_dense", "exact_blocks"):
        per_seed = []
        for s in args.seeds:
            d = next(r for r in runs if r["method"] == "doem" and r["seed"] == s)["history"]
            b = next(r for r in runs if r["method"] == base and r["seed"] == s)["history"]
            target = max(d["relative_entropy"][-1], b["relative_entropy"][-1])
            td, tb = time_to_reach(d, target), time_to_reach(b, target)
            per_seed.append({"seed": s, "target_kl": target, "t_doem_s": td, "t_baseline_s": tb,
                             "ratio": tb / td if td > 0 else math.inf})
        ratios[base] = per_seed

    # ---- long runs of the cheap block-wise methods (same n, same seeds)
    long_lr, long_lr_finals = pick_lr(n, m, args.long_iters[1], args.gamma0, args.lr_grid)
    print(f"long runs: gradient step chosen for {args.long_iters[1]} iterations: lr = {long_lr} ({long_lr_finals})")
    long_runs = []
    for (meth, iters), s in tqdm([(x, s) for x in zip(("doem", "exact_blocks"), args.long_iters) for s in args.seeds],
                                 desc="long runs"):
        spec = dict(method=meth, n=n, m=m, seed=s, iters=iters, lr=long_lr, gamma0=args.gamma0, m_tol=args.m_tol,
                    m_max_iter=args.m_max_iter, threads=1)
        long_runs.append(_run_isolated(ctx, spec))

    # ---- scaling (block-wise methods; dense baselines a few steps)
    scaling = []
    scale_jobs = [("doem", k, args.scale_iters) for k in args.scale_n] + \
                 [("exact_blocks", k, args.scale_iters) for k in args.scale_n] + \
                 [(meth, k, args.dense_scale_iters) for k in args.dense_scale_n for meth in ("exact_dense", "bound_dense")]
    for meth, k, iters in tqdm(scale_jobs, desc="scaling runs"):
        spec = dict(method=meth, n=k, m=m, seed=0, iters=iters, lr=lr, gamma0=args.gamma0, m_tol=args.m_tol,
                    m_max_iter=args.m_max_iter, threads=args.dense_threads if "dense" in meth else 1)
        r = _run_isolated(ctx, spec)
        scaling.append({k2: v for k2, v in r.items()})

    result = {
        "command": "python " + " ".join([os.path.relpath(__file__, ROOT)] + (argv if argv is not None else sys.argv[1:])),
        "hardware": hw,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "lr": lr, "lr_pilot_final_kl": lr_finals,
        "runs": runs, "long_runs": long_runs, "long_lr": long_lr, "long_lr_pilot_final_kl": long_lr_finals, "summary": summary, "speed_ratio_at_equal_kl": ratios, "scaling": scaling,
    }
    out_json = args.out / "exact_doem_vs_baselines.json"
    out_json.write_text(json.dumps(result, indent=1, default=float))
    _plots(result, args.out, n, m)

    # ---- markdown
    print(f"\n### DO-EM vs baselines, CQ QRBM {n} visible + {m} hidden, mixture of Bernoulli (M=8, p=0.9), "
          f"{len(args.seeds)} seeds, {args.iters} iterations\n")
    print("| method | final KL (mean) | final KL per seed | wall time (s, mean) | time / iteration (s) | peak RSS (MB) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for meth in METHODS:
        s = summary[meth]
        print(f"| {meth} | {s['final_kl_mean']:.4f} | {', '.join(f'{x:.4f}' for x in s['final_kl'])} | "
              f"{s['time_s_mean']:.2f} | {s['time_per_iter_s']:.4f} | {s['peak_rss_mb_max']:.1f} |")
    print("\nSpeed ratio at equal final KL (target = the worse of the two final KLs, per seed):\n")
    print("| baseline | seed | target KL | DO-EM time (s) | baseline time (s) | ratio |")
    print("| --- | --- | --- | --- | --- | --- |")
    for base, rows in ratios.items():
        for r in rows:
            print(f"| {base} | {r['seed']} | {r['target_kl']:.4f} | {r['t_doem_s']:.3f} | {r['t_baseline_s']:.3f} | "
                  f"{r['ratio']:.1f} |")
    print("\nLong runs of the block-wise methods (same seeds):\n")
    print("| method | iterations | final KL (mean) | wall time (s, mean) | time to reach DO-EM's final KL at the short run (s) |")
    print("| --- | --- | --- | --- | --- |")
    for meth in ("doem", "exact_blocks"):
        rs = [r for r in long_runs if r["method"] == meth]
        reach = []
        for r in rs:
            d = next(x for x in runs if x["method"] == "doem" and x["seed"] == r["seed"])["history"]
            reach.append(time_to_reach(r["history"], d["relative_entropy"][-1]))
        print(f"| {meth} | {rs[0]['iters']} | {sum(r['history']['relative_entropy'][-1] for r in rs) / len(rs):.4f} | "
              f"{sum(r['history']['time'][-1] for r in rs) / len(rs):.2f} | {', '.join(f'{x:.3f}' for x in reach)} |")
    print(f"\nScaling ({m} hidden, seed 0):\n")
    print("| method | n visible | dense dim | iterations | final KL | time / iteration (s) | peak RSS (MB) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in scaling:
        h = r["history"]
        print(f"| {r['method']} | {r['n']} | {r['dense_dim']} | {r['iters']} | {h['relative_entropy'][-1]:.4f} | "
              f"{h['time'][-1] / r['iters']:.3f} | {r['peak_rss_mb']:.1f} |")
    print(f"\nwrote {out_json}")


def _plots(result: dict, out: Path, n: int, m: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"doem": "C0", "exact_dense": "C1", "bound_dense": "C2", "exact_blocks": "C3"}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for r in result["runs"]:
        h = r["history"]
        lab = r["method"] if r["seed"] == result["config"]["seeds"][0] else None
        axes[0].plot(range(len(h["relative_entropy"])), h["relative_entropy"], color=colors[r["method"]], label=lab, alpha=0.8)
        axes[1].plot(h["time"], h["relative_entropy"], color=colors[r["method"]], label=lab, alpha=0.8)
    axes[0].set_xlabel("iteration")
    axes[1].set_xlabel("wall time (s)")
    axes[1].set_xscale("symlog", linthresh=1e-2)
    for ax in axes:
        ax.set_ylabel("KL(q || p_theta)")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(f"CQ QRBM {n}+{m} on mixture of Bernoulli (exact likelihood)")
    fig.tight_layout()
    fig.savefig(out / f"exact_doem_vs_baselines_n{n}.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for meth in ("doem", "exact_blocks", "exact_dense", "bound_dense"):
        rs = sorted([r for r in result["scaling"] if r["method"] == meth] +
                    [r for r in result["runs"] if r["method"] == meth and r["seed"] == result["config"]["seeds"][0]],
                    key=lambda r: r["n"])
        if rs:
            ax.plot([r["n"] for r in rs], [r["history"]["time"][-1] / r["iters"] for r in rs], "o-",
                    color=colors[meth], label=meth)
    ax.set_yscale("log")
    ax.set_xlabel("visible units n")
    ax.set_ylabel("time per iteration (s)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "exact_doem_scaling.png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
