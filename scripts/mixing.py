"""How fast a machine's sampling chains mix, sampler against sampler at equal cost.

Each sampler runs ``--chains`` chains from noise for ``--sweeps`` sweeps of the machine counted over all
replicas (a ladder of K replicas makes ``--sweeps / K`` rounds: equal cost), drops the first
``--burn-in`` sweeps, and records after every round the target replica's marginal free energy
``F(x)`` (quantum layers traced out) and the class the package's classifier reads in its image (the
visible units' conditional mean). Reported per sampler (``qidbm.metrics.mixing``): the integrated
autocorrelation time of ``F`` and of the class (its one-hot vector) in sweeps, each flagged unreliable
when the record is shorter than 50 of them (the estimate is then a lower bound), class switches per
1,000 sweeps, the classes visited per chain, swap rates, and the wall time. Writes ``<out>.json`` and ``<out>.png`` (autocorrelation of
``F`` against sweeps).

Samplers: ``gibbs`` (the machine's kernel alone), ``betas:1,0.9,...`` (replica exchange over inverse
temperatures), ``fields:1,0.5,...,0`` (replica exchange over transverse-field scales; quantum machines).

    python scripts/mixing.py checkpoints/qidbm_mnist_binary.ckpt --sampler gibbs \\
        --sampler betas:1,0.9,0.8,0.7 --sampler fields:1,0.5,0.25,0 --out bench/results/mixing_qidbm
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch


def parse_sampler(text: str) -> tuple[str, tuple[float, ...]]:
    """``gibbs`` -> ("gibbs", ()); ``betas:1,0.9`` -> ("betas", (1.0, 0.9)); the same for ``fields:``."""
    if text == "gibbs":
        return "gibbs", ()
    kind, _, values = text.partition(":")
    if kind not in ("betas", "fields") or not values:
        raise argparse.ArgumentTypeError(f"a sampler is gibbs, betas:1,B1,... or fields:1,S1,...; got {text!r}")
    try:
        return kind, tuple(float(x) for x in values.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"the ladder of {text!r} must be comma-separated numbers") from None


@torch.no_grad()
def run_sampler(model, kernel, sampler, chains: int, sweeps: int, burn_in: int, classify, seed: int) -> dict:
    """Record ``F`` and the class of the target replica after every round; return the measures."""
    from qidbm.metrics.mixing import autocorrelation, class_switches, integrated_autocorrelation_time
    from qidbm.samplers.tempering import ReplicaExchange

    kind, ladder = sampler
    g = torch.Generator().manual_seed(seed)
    if kind == "gibbs":
        exchange, k = None, 1
        states = [model.random_state(chains, g)]
    else:
        make = ReplicaExchange.temperatures if kind == "betas" else ReplicaExchange.field_scales
        exchange = make(model, ladder, kernel)
        k = len(exchange.ladder)
        states = exchange.initial_states(chains, g)
    rounds, skip = sweeps // k, burn_in // k
    f_trace, labels, swaps = [], [], []
    t0 = time.time()
    for r in range(rounds):
        if exchange is None:
            states[0], _ = kernel.run(model, states[0], 1, generator=g)
        else:
            states, st = exchange.run(states, 1, generator=g, first_round=r)
            if r >= skip:
                swaps.append(st.swap_rates())
        if r >= skip:
            target = states[0]
            f_trace.append(model.marginal_free_energy(target, summed=model.quantum_layers).float())
            labels.append(classify(model.conditional(0, target)[0]))
    seconds = time.time() - t0
    f = torch.stack(f_trace)
    lab = torch.stack(labels)
    rho = autocorrelation(f)
    # the class as a statistic of its own: the one-hot vectors of every chain pooled, so that tau counts
    # the sweeps between independent draws of the class (slow when chains keep their digit)
    onehot = torch.nn.functional.one_hot(lab, 10).reshape(lab.shape[0], -1).double()
    switched = bool((lab[1:] != lab[:-1]).any())
    tau_f = integrated_autocorrelation_time(f)
    tau_c = integrated_autocorrelation_time(onehot) if switched else float("inf")  # no chain left its class
    n = rounds - skip
    out = {"sampler": kind if kind == "gibbs" else f"{kind}:{','.join(f'{x:g}' for x in ladder)}",
           "replicas": k, "rounds": rounds, "recorded_rounds": n,
           "tau_sweeps": tau_f * k, "tau_class_sweeps": tau_c * k if switched else None,
           # emcee's rule of thumb: an estimate from fewer than 50 tau of record is a lower bound
           "tau_reliable": n >= 50 * tau_f, "tau_class_reliable": n >= 50 * tau_c,
           "class_switches_per_1000_sweeps": class_switches(lab, sweeps_per_record=k),
           "classes_visited_per_chain": float(torch.tensor([len(set(c.tolist())) for c in lab.T]).double().mean()),
           "final_class_fractions": torch.bincount(lab[-1], minlength=10).double().div(chains).tolist(),
           "seconds": round(seconds, 1), "autocorrelation": rho[: min(len(rho), 200)].tolist()}
    if swaps:
        pairs = sorted(swaps[0].keys() | swaps[-1].keys())
        out["swap_rates"] = [float(torch.stack([s[p].double().mean() for s in swaps if p in s]).mean()) for p in pairs]
    return out


def plot(results: list[dict], png: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for r in results:
        rho = r["autocorrelation"]
        ax.plot([t * r["replicas"] for t in range(len(rho))], rho,
                label=f"{r['sampler']} (tau {r['tau_sweeps']:.0f} sweeps)")
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_xlabel("sweeps (all replicas counted)")
    ax.set_ylabel("autocorrelation of F(x)")
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=120)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--sampler", type=parse_sampler, action="append", required=True,
                   help="gibbs, betas:1,B1,... or fields:1,S1,...,0 (repeat to compare)")
    p.add_argument("--chains", type=int, default=100)
    p.add_argument("--sweeps", type=int, default=4000, help="sweeps per chain, counted over all replicas")
    p.add_argument("--burn-in", type=int, default=500, help="sweeps (over all replicas) left out of the record")
    p.add_argument("--quantum-step", choices=("paper", "exact"), default="exact")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output path without extension (.json and .png are written)")
    a = p.parse_args(argv)
    if a.sweeps <= a.burn_in:
        p.error(f"--sweeps ({a.sweeps}) must exceed --burn-in ({a.burn_in})")

    from qidbm.checkpoint import load_checkpoint
    from qidbm.metrics.classifier import load_classifier
    from qidbm.samplers.drawing import make_kernel

    model, info = load_checkpoint(a.checkpoint)
    if any(s[0] == "fields" for s in a.sampler) and not model.quantum_layers:
        p.error(f"{a.checkpoint} is a classical machine: a fields: ladder needs quantum layers")
    net = load_classifier(info["data_info"]["dataset"])
    kernel = make_kernel(quantum_step=a.quantum_step)

    def classify(v):
        return net(v.float()).argmax(1)

    results = []
    for s in a.sampler:
        r = run_sampler(model, kernel, s, a.chains, a.sweeps, a.burn_in, classify, a.seed)
        results.append(r)
        print(f"{r['sampler']}: tau(F) {r['tau_sweeps']:.1f} sweeps{'' if r['tau_reliable'] else ' (lower bound)'}, "
              + (f"tau(class) {r['tau_class_sweeps']:.0f} sweeps{'' if r['tau_class_reliable'] else ' (lower bound)'}, "
                 if r["tau_class_sweeps"] is not None else "tau(class) unbounded (no chain changed class), ")
              + f"{r['class_switches_per_1000_sweeps']:.1f} class "
              f"switches per 1,000 sweeps, {r['classes_visited_per_chain']:.2f} classes per chain, "
              + (f"swap rates {', '.join(f'{x:.2f}' for x in r['swap_rates'])}, " if "swap_rates" in r else "")
              + f"{r['seconds']:.0f} s", flush=True)
    hw = f"{platform.machine()} {platform.processor() or ''}, torch {torch.__version__}, {torch.get_num_threads()} threads"
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(
        {"command": "python scripts/mixing.py " + " ".join(argv if argv is not None else sys.argv[1:]),
         "checkpoint": str(a.checkpoint), "chains": a.chains, "sweeps": a.sweeps, "burn_in": a.burn_in,
         "quantum_step": a.quantum_step, "hardware": hw, "results": results}, indent=2))
    plot(results, out.with_suffix(".png"), f"{a.checkpoint.name}, {a.chains} chains, {a.quantum_step} step; {hw}")
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
