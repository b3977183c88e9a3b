"""em algorithm (Kimura, Kato and Hayashi) vs gradient descent on the sqRBM, exact likelihoods.

Model: Kimura et al.'s sqRBM, i.e. the CQ QRBM of docs/maths.md, 'Spin-convention map' (Z fields, visible-hidden
ZZ couplings, trainable transverse fields on the hidden qubits), evaluated block-wise.
Methods, at an equal budget of gradient evaluations (``outer * inner``):

* ``em``    - e-step (the model's own hidden posterior), then ``inner`` fixed-step gradient steps
              on the concave m-step objective (= DO-EM Algorithm 2 with ``m_step="gd"``);
* ``gd``    - ``outer * inner`` fixed-step gradient steps on the exact log-likelihood;
* ``doem``  - DO-EM with the M-step solved by L-BFGS to max|grad| <= 1e-6 or 50 iterations (reference), ``outer``
              iterations (its gradient evaluations are counted and reported, not matched).

Each step size in ``--lr`` is run for em and gd; the table reports every lr and the best per
method. Datasets: Kimura et al.'s four (mixture of Bernoulli, parity, cardinality, O(n^2)) plus
the single-line bars-and-stripes of Demidik et al. Outputs
``bench/results/exact_em_vs_gd.json`` + PNG and prints a markdown table.
Usage: ``python scripts/exact_em_vs_gd.py [--n 8] [--hidden 1 2] [--seeds 3]``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from qidbm.exact import cq_qrbm_hamiltonian, do_em_cq, get_distribution, kimura_em, train_exact_gradient  # noqa: E402

DATASETS = ("bernoulli_mixture", "parity", "cardinality", "o_n2", "bas_single_line")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--hidden", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--outer", type=int, default=40, help="e-steps of em (and DO-EM iterations)")
    ap.add_argument("--inner", type=int, default=10, help="m-step gradient steps per e-step")
    ap.add_argument("--lr", type=float, nargs="+", default=[0.05, 0.2])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    hw = f"{os.cpu_count()}-core CPU ({platform.machine()}), no GPU, torch {torch.__version__}, {args.threads} thread(s)"
    print(f"hardware: {hw}")
    from tqdm.auto import tqdm

    runs = []
    jobs = [(d, m, s) for d in args.datasets for m in args.hidden for s in range(args.seeds)]
    t_all = time.perf_counter()
    for d, m, s in tqdm(jobs, desc="em vs gd"):
        q = get_distribution(d, args.n, seed=s).probs()
        ham = cq_qrbm_hamiltonian(args.n, m)
        theta0 = ham.random_theta(torch.Generator().manual_seed(500 + s), scale=1.0)
        for lr in args.lr:
            _, he = kimura_em(ham, theta0, q, args.outer, inner_steps=args.inner, lr=lr)
            _, hg = train_exact_gradient(ham, theta0, q, args.outer * args.inner, lr=lr, method="blocks")
            runs.append({"dataset": d, "m": m, "seed": s, "lr": lr, "method": "em", "kl": he.relative_entropy,
                         "time": he.time, "evals_per_point": args.inner})
            runs.append({"dataset": d, "m": m, "seed": s, "lr": lr, "method": "gd", "kl": hg.relative_entropy,
                         "time": hg.time, "evals_per_point": 1})
        _, hd = do_em_cq(ham, theta0, q, args.outer, m_tol=1e-6, m_max_iter=50)
        runs.append({"dataset": d, "m": m, "seed": s, "lr": None, "method": "doem", "kl": hd.relative_entropy,
                     "time": hd.time, "m_step_evaluations": hd.m_step_evaluations})
    total = time.perf_counter() - t_all

    def final(meth, d, m, lr):
        rs = [r for r in runs if r["method"] == meth and r["dataset"] == d and r["m"] == m and r["lr"] == lr]
        return sum(r["kl"][-1] for r in rs) / len(rs)

    table = []
    for d in args.datasets:
        for m in args.hidden:
            row = {"dataset": d, "m": m}
            for lr in args.lr:
                row[f"em@{lr}"] = final("em", d, m, lr)
                row[f"gd@{lr}"] = final("gd", d, m, lr)
            row["em_best"] = min(row[f"em@{lr}"] for lr in args.lr)
            row["gd_best"] = min(row[f"gd@{lr}"] for lr in args.lr)
            row["doem"] = final("doem", d, m, None)
            dr = [r for r in runs if r["method"] == "doem" and r["dataset"] == d and r["m"] == m]
            row["doem_evals"] = sum(sum(r["m_step_evaluations"]) for r in dr) / len(dr)
            row["winner"] = "em" if row["em_best"] < row["gd_best"] else "gd"
            table.append(row)
    result = {"command": "python " + " ".join([os.path.relpath(__file__, ROOT)] + (argv if argv is not None else sys.argv[1:])),
              "hardware": hw, "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "table": table, "runs": runs, "total_seconds": total}
    out_json = args.out / "exact_em_vs_gd.json"
    out_json.write_text(json.dumps(result, indent=1))
    _plot(runs, args, args.out)

    print(f"\n### em vs gradient descent, sqRBM (CQ QRBM) n = {args.n}, {args.seeds} seeds, "
          f"{args.outer} e-steps x {args.inner} m-step gradient steps = {args.outer * args.inner} gradient evaluations "
          f"for both; final KL(q||p) averaged over seeds\n")
    lr_cols = " | ".join(f"em lr={lr} | gd lr={lr}" for lr in args.lr)
    print(f"| dataset | m | {lr_cols} | best em | best gd | winner | DO-EM (L-BFGS M-step) | DO-EM gradient evals |")
    print("| --- | --- | " + " | ".join(["---"] * (2 * len(args.lr))) + " | --- | --- | --- | --- | --- |")
    for row in table:
        vals = " | ".join(f"{row[f'em@{lr}']:.4f} | {row[f'gd@{lr}']:.4f}" for lr in args.lr)
        print(f"| {row['dataset']} | {row['m']} | {vals} | {row['em_best']:.4f} | {row['gd_best']:.4f} | "
              f"{row['winner']} | {row['doem']:.4f} | {row['doem_evals']:.0f} |")
    print(f"\nSame runs compared per iteration (em after {args.outer} e-steps = {args.outer * args.inner} gradient "
          f"evaluations; gd after {args.outer} steps = {args.outer} evaluations), final KL averaged over seeds:\n")
    print("| dataset | m | " + " | ".join(f"em lr={lr} | gd lr={lr}" for lr in args.lr) + " |")
    print("| --- | --- | " + " | ".join(["---"] * (2 * len(args.lr))) + " |")
    for d in args.datasets:
        for m in args.hidden:
            vals = []
            for lr in args.lr:
                em = [r["kl"][-1] for r in runs if r["method"] == "em" and r["dataset"] == d and r["m"] == m and r["lr"] == lr]
                gd = [r["kl"][args.outer] for r in runs
                      if r["method"] == "gd" and r["dataset"] == d and r["m"] == m and r["lr"] == lr]
                vals.append(f"{sum(em) / len(em):.4f} | {sum(gd) / len(gd):.4f}")
            print(f"| {d} | {m} | " + " | ".join(vals) + " |")
    wins = {d: sum(1 for r in table if r["dataset"] == d and r["winner"] == "em") for d in args.datasets}
    print(f"\nem wins (settings per dataset, of {len(args.hidden)}): {wins}; total {total:.0f} s; wrote {out_json}")


def _plot(runs, args, out: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(args.hidden), len(args.datasets), figsize=(3.3 * len(args.datasets), 2.9 * len(args.hidden)),
                             squeeze=False)
    lr = max(args.lr)
    for i, m in enumerate(args.hidden):
        for j, d in enumerate(args.datasets):
            ax = axes[i][j]
            for meth, col in (("em", "C0"), ("gd", "C3")):
                for r in runs:
                    if r["method"] == meth and r["dataset"] == d and r["m"] == m and r["lr"] == lr:
                        x = [k * r["evals_per_point"] for k in range(len(r["kl"]))]
                        ax.plot(x, r["kl"], color=col, alpha=0.7, label=meth if r["seed"] == 0 else None)
            ax.set_title(f"{d}, m={m}", fontsize=9)
            ax.set_xlabel("gradient evaluations", fontsize=8)
            ax.set_ylabel("KL", fontsize=8)
            ax.set_yscale("log")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"em (blue) vs gd (red), lr = {lr}", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "exact_em_vs_gd.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
