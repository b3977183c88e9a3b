"""Hidden-unit equivalence of Demidik et al.: minimum hidden units m for TVD < 0.2.

Models: RBM (W_h = {Z}), sqRBM {X, Z}, sqRBM {X, Y, Z}, all through the exact closed form
of Proposition 1 (``qidbm.exact.sqrbm``; checked against dense density matrices in
``tests/exact/test_sqrbm.py``). Training as in the paper: parameters uniform in [-1, 1],
AMSGrad (lr 0.1, betas 0.9/0.999) on KL(q || p) with exact enumeration and the closed-form
gradients of Proposition 2; all seeds are
trained at once as a batch. A setting "reaches" the threshold when the TVD averaged over
seeds is below 0.2 at the end of training. The minimum m is found by a doubling search
followed by bisection (assumes the averaged TVD is monotone in m, as in the paper's Fig. 2).
Theorem 2 predicts m_RBM / m_sqRBM{X,Z} ~ 2 and m_RBM / m_sqRBM{X,Y,Z} ~ 3.

Datasets (``qidbm.exact.distributions``): simplified BAS (single lines on a 2 x n/2 grid),
O(n^2) (a different random support per seed), cardinality, parity.

Outputs ``bench/results/exact_sqrbm_equivalence.json`` + PNG, prints a markdown table.
Usage: ``python scripts/exact_sqrbm_equivalence.py [--n 6 8 10] [--seeds 5] [--steps 500]``.
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

from qidbm.exact import get_distribution, sqrbm_init, sqrbm_log_probs, sqrbm_nll_grad, total_variation  # noqa: E402

DATASETS = ("bas_single_line", "o_n2", "cardinality", "parity")
MODELS = {"RBM": "Z", "sqRBM{X,Z}": "XZ", "sqRBM{X,Y,Z}": "XYZ"}


def targets(dataset: str, n: int, seeds: list[int]) -> torch.Tensor:
    """[S, 2^n] target distributions (O(n^2) draws a new support per seed, as in the paper)."""
    return torch.stack([get_distribution(dataset, n, seed=s).probs() for s in seeds])


def train_tvd(q: torch.Tensor, n: int, m: int, paulis: str, seeds: list[int], steps: int, lr: float) -> list[float]:
    """Train one model per seed (batched) and return the final TVD per seed."""
    g = torch.Generator().manual_seed(10_000 * m + 17 * len(paulis) + seeds[0])
    params = sqrbm_init(n, m, paulis, batch=(len(seeds),), generator=g)
    opt = torch.optim.Adam(list(params.values()), lr=lr, betas=(0.9, 0.999), amsgrad=True)
    for _ in range(steps):
        # closed-form gradient of KL(q||p) = NLL - H(q) (Prop. 2), per seed along the batch dim
        grads = sqrbm_nll_grad(params, q, n)
        for k, v in params.items():
            v.grad = grads[k]
        opt.step()
    with torch.no_grad():
        p = sqrbm_log_probs(params, n).exp()
        return total_variation(q, p).tolist()


def min_hidden(q, n, paulis, seeds, steps, lr, m_max, threshold, cache):
    """Smallest m with mean TVD < threshold (doubling, then bisection); None if m_max fails."""

    def ok(m):
        if m not in cache:
            tv = train_tvd(q, n, m, paulis, seeds, steps, lr)
            cache[m] = sum(tv) / len(tv)
        return cache[m] < threshold

    lo, hi = 0, 1  # lo: largest known failure, hi: candidate
    while not ok(hi):
        lo = hi
        if hi >= m_max:
            return None
        hi = min(2 * hi, m_max)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, nargs="+", default=[6, 8, 10])
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--m-max", type=int, default=32)
    ap.add_argument("--threshold", type=float, default=0.2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    hw = f"{os.cpu_count()}-core CPU ({platform.machine()}), no GPU, torch {torch.__version__}, {args.threads} thread(s)"
    print(f"hardware: {hw}")
    seeds = list(range(args.seeds))
    from tqdm.auto import tqdm

    rows = []
    jobs = [(d, n, name) for n in args.n for d in args.datasets for name in MODELS]
    t_all = time.perf_counter()
    for d, n, name in tqdm(jobs, desc="settings"):
        q = targets(d, n, seeds)
        cache: dict[int, float] = {}
        t0 = time.perf_counter()
        m_min = min_hidden(q, n, MODELS[name], seeds, args.steps, args.lr, args.m_max, args.threshold, cache)
        rows.append({"dataset": d, "n": n, "model": name, "m_min": m_min, "mean_tvd_by_m": dict(sorted(cache.items())),
                     "seconds": time.perf_counter() - t0})
        tqdm.write(f"{d} n={n} {name}: m_min={m_min}  TVD by m: "
                   + ", ".join(f"{k}:{v:.3f}" for k, v in sorted(cache.items())))
        (args.out / "exact_sqrbm_equivalence.partial.json").write_text(json.dumps(rows, indent=1))
    total = time.perf_counter() - t_all
    result = {"command": "python " + " ".join([os.path.relpath(__file__, ROOT)] + (argv if argv is not None else sys.argv[1:])),
              "hardware": hw, "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "rows": rows, "total_seconds": total}
    out_json = args.out / "exact_sqrbm_equivalence.json"
    out_json.write_text(json.dumps(result, indent=1))
    (args.out / "exact_sqrbm_equivalence.partial.json").unlink(missing_ok=True)
    _plot(rows, args, args.out)

    def fmt(x):
        return "-" if x is None else str(x)

    print(f"\n### Minimum hidden units for mean TVD < {args.threshold} ({args.seeds} seeds, {args.steps} AMSGrad steps, "
          f"lr {args.lr}, m <= {args.m_max})\n")
    print("| dataset | n | m RBM | m sqRBM{X,Z} | m sqRBM{X,Y,Z} | ratio RBM/{X,Z} | ratio RBM/{X,Y,Z} |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for n in args.n:
        for d in args.datasets:
            ms = {r["model"]: r["m_min"] for r in rows if r["dataset"] == d and r["n"] == n}
            r_rbm = ms["RBM"]

            def ratio(k):
                if r_rbm is None or ms[k] is None:
                    return "-"
                return f"{r_rbm / ms[k]:.2f}"

            print(f"| {d} | {n} | {fmt(r_rbm)} | {fmt(ms['sqRBM{X,Z}'])} | {fmt(ms['sqRBM{X,Y,Z}'])} | "
                  f"{ratio('sqRBM{X,Z}')} | {ratio('sqRBM{X,Y,Z}')} |")
    print(f"\ntotal {total:.0f} s; wrote {out_json}")


def _plot(rows, args, out: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(args.n), len(args.datasets), figsize=(3.2 * len(args.datasets), 2.8 * len(args.n)),
                             squeeze=False)
    for i, n in enumerate(args.n):
        for j, d in enumerate(args.datasets):
            ax = axes[i][j]
            for k, name in enumerate(MODELS):
                r = next((r for r in rows if r["dataset"] == d and r["n"] == n and r["model"] == name), None)
                if r:
                    ms = sorted(int(x) for x in r["mean_tvd_by_m"])
                    ax.plot(ms, [r["mean_tvd_by_m"][x] for x in ms], "o-", color=f"C{k}", label=name, ms=3)
            ax.axhline(args.threshold, color="k", ls="--", lw=0.8)
            ax.set_xscale("log", base=2)
            ax.set_title(f"{d}, n={n}", fontsize=9)
            ax.set_xlabel("hidden units m", fontsize=8)
            ax.set_ylabel("mean TVD", fontsize=8)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "exact_sqrbm_equivalence.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
