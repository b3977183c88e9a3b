"""Inception feature-extraction speed for FID on this machine, and what a 10k-sample FID costs.

Measures images/s of pytorch-fid's InceptionV3 pool3 (via qidbm.metrics.FIDAccumulator)
on 28x28 grey inputs (resized to 299x299 inside the network, as pytorch-fid does) for a
few batch sizes, thread counts and execution variants:

- ``fp32``          pytorch-fid exactly (contiguous NCHW, float32)
- ``fp32_cl``       channels-last memory format (qidbm's default; same arithmetic)
- ``fp32_cl_fused`` channels-last + batch norms folded into the convolutions
- ``bf16_cl``       channels-last + bfloat16 autocast (an approximation)

and checks numerical faithfulness of each variant: FID between N MNIST test images and
N other test images binarised at 0.5, per variant, against the exact fp32 pipeline.

Prints a markdown table with the command and hardware, writes JSON to
``bench/results/fid_speed.json``.

    python bench/fid_speed.py                 # full sweep (~10-20 min on a busy 2-core CPU)
    python bench/fid_speed.py --quick         # a smoke run
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from qidbm.metrics import FID_WEIGHTS_ENV, FID_WEIGHTS_FILENAME, FIDAccumulator, frechet_distance

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {
    "fp32": dict(channels_last=False, fuse_bn=False, bf16=False),
    "fp32_cl": dict(channels_last=True, fuse_bn=False, bf16=False),
    "fp32_cl_fused": dict(channels_last=True, fuse_bn=True, bf16=False),
    "bf16_cl": dict(channels_last=True, fuse_bn=False, bf16=True),
}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def hardware() -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()}-core CPU ({cpu_name()}), {gpu}, torch {torch.__version__}"


def default_weights() -> str:
    env = os.environ.get(FID_WEIGHTS_ENV, "")
    if env:
        return env
    cand = REPO.parent / "shared" / "fid" / FID_WEIGHTS_FILENAME
    return str(cand) if cand.is_file() else ""  # "" -> pytorch-fid's own download/cache


def mnist_test_images(n: int, data_root: Path) -> torch.Tensor:
    """First n MNIST test images as float [n, 1, 28, 28] in [0, 1] (raw IDX .gz)."""
    path = data_root / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz"
    with gzip.open(path, "rb") as f:
        raw = f.read()
    arr = np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(-1, 1, 28, 28)[:n]
    return torch.from_numpy(arr.copy()).float() / 255.0


def time_config(acc: FIDAccumulator, batch_size: int, threads: int, reps: int, gen: torch.Generator) -> dict:
    torch.set_num_threads(threads)
    x = torch.rand(batch_size, 1, 28, 28, generator=gen)
    acc.features(x)  # warm-up: oneDNN builds its kernels per input shape
    load0 = os.getloadavg()[0]
    w0, c0 = time.perf_counter(), time.process_time()
    for _ in range(reps):
        acc.features(x)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    n = reps * batch_size
    return dict(
        batch_size=batch_size, threads=threads, images=n, wall_s=wall, cpu_s=cpu,
        img_per_s=n / wall,
        # what `threads` uncontended cores would give: load from other users inflates wall time only
        img_per_s_uncontended_est=n / (cpu / threads),
        loadavg_1min=[load0, os.getloadavg()[0]],
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default=default_weights(), help="Inception weights file (pytorch-fid layout)")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[25, 50, 100])
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--reps", type=int, default=1, help="timed batches per configuration (after one warm-up)")
    p.add_argument("--fidelity-n", type=int, default=100, help="images per set in the FID faithfulness check")
    p.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "fid_speed.json")
    p.add_argument("--quick", action="store_true", help="one batch size, one thread count, tiny fidelity check")
    args = p.parse_args()
    if args.quick:
        args.batch_sizes, args.threads, args.reps, args.fidelity_n = [25], [torch.get_num_threads()], 1, 20

    command = "python " + " ".join([os.path.relpath(sys.argv[0], REPO)] + sys.argv[1:])
    hw = hardware()
    print(f"command: {command}\nhardware: {hw}\n", flush=True)
    gen = torch.Generator().manual_seed(0)

    # ---- speed ------------------------------------------------------------------
    rows = []
    accs = {}

    def run(v: str, sweep: list[tuple[int, int]]) -> None:
        if v not in accs:
            accs[v] = FIDAccumulator(args.weights or None, device="cpu", **VARIANTS[v])
        for b, t in sweep:
            r = dict(variant=v, **time_config(accs[v], b, t, args.reps, gen))
            rows.append(r)
            print(f"  {v:14s} bs={b:4d} threads={t}: {r['img_per_s']:.2f} img/s "
                  f"(uncontended est {r['img_per_s_uncontended_est']:.2f}, load {r['loadavg_1min'][0]:.1f})",
                  flush=True)

    # the full batch x threads sweep for the default variant, then the others at its best thread count
    first = "fp32_cl" if "fp32_cl" in args.variants else args.variants[0]
    run(first, [(b, t) for b in args.batch_sizes for t in args.threads])
    best_threads = max(rows, key=lambda r: r["img_per_s"])["threads"]
    for v in args.variants:
        if v != first:
            run(v, [(b, best_threads) for b in args.batch_sizes])
    torch.set_num_threads(best_threads)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=best_threads)  # numpy/scipy's BLAS for the sqrtm below
    except ImportError:
        pass

    # ---- Frechet distance on 2048-d stats (the sqrtm) ---------------------------
    rng = np.random.default_rng(0)
    f1, f2 = rng.normal(size=(4096, 2048)), rng.normal(size=(4096, 2048)) * 1.1 + 0.1
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    fd = {}
    for method in ("sqrtm", "eigh"):
        w0, c0 = time.perf_counter(), time.process_time()
        value = frechet_distance(f1.mean(0), s1, f2.mean(0), s2, method=method)
        fd[method] = dict(value=value, wall_s=time.perf_counter() - w0, cpu_s=time.process_time() - c0)
    fd["eigh"]["rel_diff_vs_sqrtm"] = (fd["eigh"]["value"] - fd["sqrtm"]["value"]) / fd["sqrtm"]["value"]
    sqrtm_s = fd["sqrtm"]["wall_s"]

    # ---- faithfulness: FID per variant vs the exact fp32 pipeline ---------------
    n = args.fidelity_n
    imgs = mnist_test_images(2 * n, args.data_root)
    ref_imgs, gen_imgs = imgs[:n], (imgs[n:] > 0.5).float()
    stats, feats = {}, {}
    for v in args.variants:
        acc = accs[v]
        fr = torch.cat([acc.features(ref_imgs[i : i + 50]) for i in range(0, n, 50)])
        fg = torch.cat([acc.features(gen_imgs[i : i + 50]) for i in range(0, n, 50)])
        feats[v] = (fr, fg)
        stats[v] = [acc.reset().update_features(f).compute_stats() for f in (fr, fg)]
    base = "fp32" if "fp32" in stats else args.variants[0]
    fid_base = frechet_distance(*stats[base][1], *stats[base][0])
    fidelity = []
    for v in args.variants:
        fid_v = frechet_distance(*stats[v][1], *stats[v][0])
        # generated through variant v against reference stats cached with the exact pipeline
        fid_mixed = frechet_distance(*stats[v][1], *stats[base][0])
        dfeat = max(float((feats[v][i] - feats[base][i]).abs().max()) for i in range(2))
        fidelity.append(dict(variant=v, fid=fid_v, fid_vs_exact_ref=fid_mixed, rel_diff=(fid_v - fid_base) / fid_base,
                             rel_diff_vs_exact_ref=(fid_mixed - fid_base) / fid_base, max_abs_feature_diff=dfeat))

    # ---- 10k-sample FID estimate ------------------------------------------------
    best = {}
    for r in rows:
        if r["variant"] not in best or r["img_per_s"] > best[r["variant"]]["img_per_s"]:
            best[r["variant"]] = r
    estimates = []
    for v, r in best.items():
        estimates.append(dict(
            variant=v, batch_size=r["batch_size"], threads=r["threads"],
            gen_10k_s=10_000 / r["img_per_s"] + sqrtm_s,
            gen_10k_s_uncontended_est=10_000 / r["img_per_s_uncontended_est"] + sqrtm_s,
            first_time_with_reference_s=20_000 / r["img_per_s"] + sqrtm_s,
        ))

    # ---- report -----------------------------------------------------------------
    print("\n## Inception (pytorch-fid pool3) feature extraction, 28x28 grey -> 299x299\n")
    print(f"command: `{command}`  \nhardware: {hw}\n")
    print("| variant | batch | threads | img/s (wall) | img/s (uncontended est.) | load avg |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['variant']} | {r['batch_size']} | {r['threads']} | {r['img_per_s']:.2f} | "
              f"{r['img_per_s_uncontended_est']:.2f} | {r['loadavg_1min'][0]:.1f} |")
    print(f"\nFrechet distance on 2048-d stats: sqrtm (default, pytorch-fid) {fd['sqrtm']['wall_s']:.1f} s wall / "
          f"{fd['sqrtm']['cpu_s']:.1f} s CPU; eigh {fd['eigh']['wall_s']:.1f} s wall / {fd['eigh']['cpu_s']:.1f} s CPU; "
          f"relative difference {fd['eigh']['rel_diff_vs_sqrtm']:+.1e}")
    print(f"\n## FID faithfulness: {n} MNIST test images vs {n} other test images binarised at 0.5\n")
    print("| variant | FID | rel. diff vs fp32 | FID vs fp32 reference stats | rel. diff | max abs feature diff |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for f in fidelity:
        print(f"| {f['variant']} | {f['fid']:.4f} | {f['rel_diff']:+.2e} | {f['fid_vs_exact_ref']:.4f} | "
              f"{f['rel_diff_vs_exact_ref']:+.2e} | {f['max_abs_feature_diff']:.2e} |")
    print("\n## Estimated 10,000-sample FID (generated only; reference stats cached)\n")
    print("| variant | batch | threads | minutes (measured rate) | minutes (uncontended est.) | first run incl. reference |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for e in estimates:
        print(f"| {e['variant']} | {e['batch_size']} | {e['threads']} | {e['gen_10k_s'] / 60:.1f} | "
              f"{e['gen_10k_s_uncontended_est'] / 60:.1f} | {e['first_time_with_reference_s'] / 60:.1f} |")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(dict(
        command=command, hardware=hw, best_threads=best_threads, torch=torch.__version__, weights=args.weights or "pytorch-fid default",
        speed=rows, frechet_distance_2048=fd, fidelity=dict(n_per_set=n, base=base, rows=fidelity),
        estimates_10k=estimates, time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    ), indent=2))
    print(f"\nwrote {os.path.relpath(args.out, REPO)}")


if __name__ == "__main__":
    main()
