"""Seeds side by side: FID mean and standard deviation per model from ``qidbm evaluate --json`` files.

Each group is one model (or recipe) trained with several seeds at the same wall time; each file
is the evaluation of one run's last checkpoint. Prints (and with ``--out`` writes) a markdown table
of every run (seed from the file name's ``s<seed>``, updates, FID, classes within 4-20 %) and the
per-group mean and sample standard deviation (ddof 1). With two groups of runs paired by seed it
adds the paired differences and a paired t-test (scipy), and Welch's t-test on the two groups.

    python scripts/seed_table.py --group DBM runs/fid10k_dbm_s0.json runs/fid10k_dbm_s1.json runs/fid10k_dbm_s2.json \\
        --group QiDBM runs/fid10k_qidbm_s0.json runs/fid10k_qidbm_s1.json runs/fid10k_qidbm_s2.json --out bench/results/seeds.md
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path


def seed_of(path: Path) -> int | None:
    m = re.search(r"(?:^|[_-])s(\d+)(?:[_.-]|$)", path.stem)
    return int(m.group(1)) if m else None


def load(path: Path) -> dict:
    r = json.loads(path.read_text())
    if r.get("fid") is None:
        raise ValueError(f"{path} has no FID: evaluate it with --fid-weights")
    cov = r.get("class_coverage") or {}
    return {"file": str(path), "seed": seed_of(path), "updates": r.get("global_step"), "fid": float(r["fid"]),
            "num_samples": r.get("num_samples"), "sampling": r.get("sampling"),
            "classes": cov.get("classes_in_range"), "largest": cov.get("max_fraction")}


def summary(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for one value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--group", nargs="+", action="append", required=True, metavar=("NAME", "JSON"),
                   help="a group name and its evaluation files")
    p.add_argument("--out", type=Path, default=None, help="write the table to this markdown file")
    a = p.parse_args(argv)
    groups = {}
    for g in a.group:
        if len(g) < 2:
            p.error(f"--group {g[0]} needs at least one evaluation file")
        groups[g[0]] = [load(Path(f)) for f in g[1:]]
    lines = ["| group | seed | updates | FID | samples | classes within 4-20 % | largest class |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, rows in groups.items():
        for r in sorted(rows, key=lambda r: (r["seed"] is None, r["seed"])):
            largest = "-" if r["largest"] is None else f"{100 * r['largest']:.1f} %"
            classes = "-" if r["classes"] is None else f"{r['classes']}/10"
            lines.append(f"| {name} | {r['seed']} | {r['updates']} | {r['fid']:.2f} | {r['num_samples']} | {classes} | {largest} |")
    lines += ["", "| group | runs | FID mean | FID std (ddof 1) | updates mean |", "| --- | ---: | ---: | ---: | ---: |"]
    for name, rows in groups.items():
        m, s = summary([r["fid"] for r in rows])
        lines.append(f"| {name} | {len(rows)} | {m:.2f} | {s:.2f} | {statistics.fmean(r['updates'] or 0 for r in rows):.0f} |")
    if len(groups) == 2:
        from scipy import stats

        (na, ra), (nb, rb) = groups.items()
        welch = stats.ttest_ind([r["fid"] for r in rb], [r["fid"] for r in ra], equal_var=False)
        lines += ["", f"Welch's t-test, {nb} vs {na}: t = {welch.statistic:.2f}, p = {welch.pvalue:.3f}."]
        by_seed = {r["seed"]: r for r in ra if r["seed"] is not None}
        pairs = [(by_seed[r["seed"]], r) for r in rb if r["seed"] in by_seed]
        if len(pairs) >= 2:
            d = [y["fid"] - x["fid"] for x, y in pairs]
            m, s = summary(d)
            t = stats.ttest_rel([y["fid"] for _, y in pairs], [x["fid"] for x, _ in pairs])
            lines.append(f"Paired by seed ({len(pairs)} seeds), FID {nb} - {na}: {', '.join(f'{x:+.2f}' for x in d)}; "
                         f"mean {m:+.2f} +- {s:.2f} (std); paired t = {t.statistic:.2f}, p = {t.pvalue:.3f}.")
    sampling = {r["sampling"] for rows in groups.values() for r in rows}
    lines += ["", "Sampling: " + "; ".join(sorted(str(s) for s in sampling)) + ".",
              "Command: `python scripts/seed_table.py " + " ".join(argv if argv is not None else sys.argv[1:]) + "`"]
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
