"""Each CPU recipe's training update against this machine's matrix-product limit.

For every recipe (``--recipes``, default all of ``RECIPES``) the module is built from the recipe's
config files exactly as ``qidbm fit`` builds it (bench/harness.py ``from_configs``: the machine, its
estimators, precision, centering and optimizer; a two-stage recipe in its second stage), started on the recipe's own training batches, and
``--reps`` updates (``module.fit_step``: loss, backward, centering transform, optimizer step; no
Lightning loop, logging or checkpoints) are timed after ``--warmup`` untimed ones. Beside the median
time: the update's **matmul limit**, every matrix product of one update replayed alone at its shape,
layout and dtype (bfloat16 for the bfloat16 recipes), best of 3, summed; ``limit / time`` is the share
of the update that the products need at this machine's best speed for them (1: nothing else costs).

    python bench/recipe_speed.py --threads 1            # every recipe (a few minutes on 1 idle core)
    python bench/recipe_speed.py --recipes dbm_long --reps 3 --warmup 1 --out /tmp/r   # a quick look
    python bench/recipe_speed.py --recipes dbm_long --profile     # + where an update's time goes, by operator

Timings need an otherwise idle machine: the 1-minute load average at the start and end is stored.
Writes ``<out>.json`` and ``<out>.md`` (default ``bench/results/recipe_speed``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (REPO, MatmulLimit, batches_of, count_products, from_configs, header, header_lines,  # noqa: E402
                     optimizer_of, set_threads, start_fit, time_updates)

BINARY, GRBM = "configs/cpu/mnist_binary", "configs/cpu/grbm"
RECIPES: dict[str, tuple[str, ...]] = {
    "dbm_long": (f"{BINARY}/base.yaml", f"{BINARY}/dbm_498.yaml", f"{BINARY}/long.yaml"),
    "qidbm_long": (f"{BINARY}/base.yaml", f"{BINARY}/qidbm_498.yaml", f"{BINARY}/long.yaml"),
    "dbm_long_finetune": (f"{BINARY}/base.yaml", f"{BINARY}/dbm_498.yaml", f"{BINARY}/long.yaml",
                          f"{BINARY}/long_finetune.yaml"),
    "qidbm_long_finetune": (f"{BINARY}/base.yaml", f"{BINARY}/qidbm_498.yaml", f"{BINARY}/long.yaml",
                            f"{BINARY}/long_finetune.yaml"),
    "grbm_wide": (f"{GRBM}/base.yaml", f"{GRBM}/mnist_grbm.yaml", f"{GRBM}/wide.yaml"),
    "qgrbm_wide": (f"{GRBM}/base.yaml", f"{GRBM}/mnist_qgrbm.yaml", f"{GRBM}/wide.yaml"),
}


def measure(name: str, reps: int, warmup: int, limit: MatmulLimit) -> dict[str, Any]:
    module, dm = from_configs(RECIPES[name], last_stage=True)
    batches = batches_of(dm, 4)
    start_fit(module, batches)
    module.lr_schedule = None  # a factor on the rate per update, free; its cool-down needs a Trainer's max_steps
    opt = optimizer_of(module)
    t = time_updates(module, batches, reps, warmup=warmup, optimizer=opt)
    products = count_products(lambda: module.fit_step(batches[0], opt))
    lim = limit.seconds(products)
    hp = module.hparams
    return {
        "recipe": name, "configs": list(RECIPES[name]), "model": type(module.model).__name__,
        "batch": int(batches[0].shape[0]), "precision": hp.matmul_precision,
        "negative": type(module.negative).__name__, "step_s": t.median, "cpu_s": t.cpu_median, "spread": t.spread,
        "reps": reps, "updates_per_s": 1.0 / t.median, "gflop": products.product_flops / 1e9,
        "gflops_achieved": products.product_flops / t.median / 1e9, "limit_s": lim, "share_of_limit": lim / t.median,
    }


def profile_table(name: str, updates: int = 10, rows: int = 12) -> str:
    """A ``torch.profiler`` table (self CPU time by operator) of ``updates`` updates of one recipe."""
    from torch.profiler import ProfilerActivity, profile

    module, dm = from_configs(RECIPES[name], last_stage=True)
    batches = batches_of(dm, 4)
    start_fit(module, batches)
    module.lr_schedule = None
    opt = optimizer_of(module)
    for i in range(3):
        module.fit_step(batches[i % 4], opt)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(updates):
            module.fit_step(batches[i % 4], opt)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def markdown(res: dict[str, Any]) -> str:
    lines = header_lines(res["header"]) + [
        "",
        "`fit_step` alone (no Lightning loop); the limit replays each product at its own dtype.",
        "",
        "| recipe | machine | negative phase | batch | products | s / update (median) | spread | updates/s | GFLOP / update | GFLOP/s | matmul limit s | limit / time |",
        "| --- | --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in res["rows"]:
        flag = " (noisy)" if r["spread"] > 0.10 else ""
        lines.append(
            f"| {r['recipe']} | {r['model']} | {r['negative']} | {r['batch']} | {r['precision']} | {r['step_s']:.4g}{flag} | "
            f"{r['spread']:.2f} | {r['updates_per_s']:.1f} | {r['gflop']:.3g} | {r['gflops_achieved']:.1f} | "
            f"{r['limit_s']:.4g} | {r['share_of_limit']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipes", default=",".join(RECIPES), help=f"comma-separated, of {', '.join(RECIPES)}")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reps", type=int, default=20, help="timed updates per recipe")
    p.add_argument("--warmup", type=int, default=3, help="untimed updates first (chains allocated, casts cached)")
    p.add_argument("--profile", action="store_true", help="also print and store a torch.profiler table of each recipe's update")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "recipe_speed"), help="output path without extension")
    a = p.parse_args(argv)
    names = [n.strip() for n in a.recipes.split(",") if n.strip()]
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        p.error(f"unknown recipe(s) {unknown}; choose from {', '.join(RECIPES)}")
    if a.reps < 2:
        p.error(f"--reps must be at least 2 (the spread needs two calls), got {a.reps}")
    set_threads(a.threads)
    limit = MatmulLimit(reps=3)
    res: dict[str, Any] = {"header": header(__file__, argv), "threads": a.threads, "rows": []}
    from tqdm.auto import tqdm

    for name in tqdm(names, desc="recipes"):
        res["rows"].append(measure(name, a.reps, a.warmup, limit))
        if a.profile:
            res["rows"][-1]["profile"] = profile_table(name)
    res["header"]["load_end"] = os.getloadavg()[0]
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=1))
    md = markdown(res) + "".join(f"\nProfile of {r['recipe']} (10 updates):\n\n```\n{r['profile']}\n```\n"
                                 for r in res["rows"] if "profile" in r)
    out.with_suffix(".md").write_text(md)
    print(md)
    return res


if __name__ == "__main__":
    main()
