"""``qidbm evaluate``: FID by the DO-EM protocol and AIS log-likelihood from a checkpoint."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch


def _parser() -> argparse.ArgumentParser:
    from qidbm.cli import _add_sampling_args

    p = argparse.ArgumentParser(prog="qidbm evaluate",
                                description="FID (pytorch-fid Inception pool3, test set) and AIS log-likelihood of a checkpoint.")
    p.add_argument("--ckpt", required=True, help="checkpoint written by `qidbm fit`")
    p.add_argument("--num-samples", type=int, default=10000, help="generated images for FID (paper: 10000)")
    _add_sampling_args(p)
    p.add_argument("--fid-weights", default=None, help="Inception weights file (else $QIDBM_FID_WEIGHTS, else download)")
    p.add_argument("--fid-backend", choices=["pytorch-fid", "torchmetrics"], default="pytorch-fid")
    p.add_argument("--fid-batch-size", type=int, default=None,
                   help="Inception batch size (default 50 on CPU: 22 img/s vs 15 at 200 on the 2-core CPU, "
                        "bench/fid_speed.py; 200 on GPU)")
    p.add_argument("--fid-method", choices=["sqrtm", "eigh"], default="eigh",
                   help="matrix square root of the Frechet distance: eigh (default; equals pytorch-fid's sqrtm "
                        "to ~1e-12 relative, tested, and is much faster) or sqrtm (pytorch-fid's own numerics)")
    p.add_argument("--no-fid", action="store_true", help="skip FID")
    p.add_argument("--ais-runs", type=int, default=100, help="AIS chains (0 skips AIS)")
    p.add_argument("--ais-betas", type=int, default=10000, help="AIS intermediate distributions")
    p.add_argument("--ais-test-examples", type=int, default=10000, help="test examples for the log-likelihood")
    p.add_argument("--save-samples", default=None, help="folder to save the generated images (.npy + grid .png)")
    p.add_argument("--json", default=None, help="write the results to this JSON file")
    return p


def _argument_problem(a: argparse.Namespace) -> str | None:
    """What is wrong with the arguments (checked before any work), or None."""
    from qidbm.cli import check_device_arg, output_path_problem

    if a.num_samples < 2 and not a.no_fid:
        return f"--num-samples must be at least 2 for FID, got {a.num_samples}"
    if a.ais_runs < 0 or a.ais_runs == 1:
        return f"--ais-runs must be 0 (no AIS) or at least 2, got {a.ais_runs}"
    if a.ais_runs and a.ais_betas < 2:
        return f"--ais-betas must be at least 2 (intermediate distributions, e.g. 10000), got {a.ais_betas}"
    if a.ais_runs and a.ais_test_examples < 1:
        return (f"--ais-test-examples must be a positive number of test images for the log-likelihood (e.g. 10000; "
                f"more than the test set uses all of it), got {a.ais_test_examples}; --ais-runs 0 skips AIS")
    problem = check_device_arg(a.device)
    if problem:
        return problem
    for option, path, folder in (("--json", a.json, False), ("--save-samples", a.save_samples, True)):
        if path:
            problem = output_path_problem(path, folder=folder)
            if problem:
                return f"{option} {path}: {problem}; choose another path (nothing was computed)"
    return None


def cmd_evaluate(argv: list[str]) -> int:
    import numpy as np

    from qidbm.checkpoint import load_checkpoint
    from qidbm.cli import check_sample_memory
    from qidbm.data import datamodule_from_info
    from qidbm.lightning.callbacks import save_grid, visible_to_images
    from qidbm.sampling import SamplingSpec, draw_samples

    a = _parser().parse_args(argv)
    if a.fid_batch_size is None:  # measured by bench/fid_speed.py: small batches are faster on CPU
        a.fid_batch_size = 200 if str(a.device).startswith("cuda") else 50
    problem = _argument_problem(a)
    if problem:  # before the checkpoint, the sampling and AIS: a bad argument costs nothing
        print(f"error: {problem}", file=sys.stderr)
        return 2
    model, info = load_checkpoint(a.ckpt, map_location=a.device)
    if not a.no_fid:
        try:
            check_sample_memory(a.num_samples, model.n_visible, a.device)
        except MemoryError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    data_info = info.get("data_info")
    results: dict = {"checkpoint": str(a.ckpt), "model": info["model_class"], "model_config": info["model_config"],
                     "epoch": info.get("epoch"), "global_step": info.get("global_step")}
    print(f"model: {info['model_class']} {info['model_config']} (epoch {info.get('epoch')})")
    dm = None
    if data_info is not None and (not a.no_fid or a.ais_runs > 0 or a.start != "noise"):
        dm = datamodule_from_info(data_info, a.data_root)
        dm.setup("fit")
    g = torch.Generator(device=a.device)
    g.manual_seed(a.seed)
    acc = None
    if not a.no_fid and a.fid_backend == "pytorch-fid":
        from qidbm.metrics.fid import FIDAccumulator

        # load the Inception weights first: a missing or wrong file fails before any sampling
        # (fuse_bn folds batch norms into the convolutions: the same features to ~1e-6, tested)
        acc = FIDAccumulator(a.fid_weights, batch_size=a.fid_batch_size, device=a.device, progress=True, fuse_bn=True)
    if not a.no_fid:
        from qidbm.metrics import compute_fid, frechet_distance, reference_stats

        if dm is None:
            raise ValueError("FID needs the test set: this checkpoint has no data_info; retrain with `qidbm fit`")
        spec = SamplingSpec(num_steps=a.num_steps, start=a.start, output=a.output, quantum_step=a.quantum_step,
                            batch_size=a.batch_size)
        data = None
        if a.start != "noise":
            data = torch.cat([b for _, b in zip(range(-(-a.num_samples // dm.batch_size)), dm.train_dataloader())])
        sampler = spec.sampler()
        t0 = time.time()
        x = draw_samples(model, a.num_samples, spec, data=data, generator=g, progress=True, sampler=sampler)
        t_sample = time.time() - t0
        images = visible_to_images(x, data_info)
        for l, rate in sampler.acceptance().items():
            print(f"acceptance rate (quantum layer {l}): {float(rate):.4f}")
            results[f"acceptance_layer{l}"] = float(rate)
        if a.save_samples:
            out = Path(a.save_samples)
            out.mkdir(parents=True, exist_ok=True)
            np.save(out / "samples.npy", images.numpy())
            save_grid(images[:100], out / "samples.png", nrow=10)
        t0 = time.time()
        if a.fid_backend == "pytorch-fid":
            key = {"dataset": data_info["dataset"], "split": "test", "encoding": data_info["encoding"],
                   "preprocessing": data_info.get("preprocessing")}
            mu_r, sigma_r = reference_stats(key, dm.test_images, accumulator=acc)
            acc.update(images)
            mu, sigma = acc.compute_stats()
            fid = float(frechet_distance(mu, sigma, mu_r, sigma_r, method=a.fid_method))
        else:
            fid = compute_fid(images, dm.test_images(), backend="torchmetrics", weights_path=a.fid_weights,
                              batch_size=a.fid_batch_size, device=a.device, progress=True)
        results.update(fid=fid, fid_backend=a.fid_backend, num_samples=a.num_samples, sampling=spec.describe(),
                       sampling_seconds=round(t_sample, 2), fid_seconds=round(time.time() - t0, 2))
        print(f"FID ({a.fid_backend}, {a.num_samples} samples vs {data_info['dataset']} test, "
              f"{data_info['encoding']}): {fid:.3f}")
        print(f"sampling: {spec.describe()}")
    if a.ais_runs > 0:
        from qidbm.metrics.likelihood import ais_log_likelihood, ais_log_partition, base_rate_visible_bias

        train = test = None
        if dm is not None:
            train = torch.cat([b for _, b in zip(range(20), dm.train_dataloader())])
            test = torch.cat(list(dm.test_dataloader()))[: a.ais_test_examples]
        base = None if (train is None or model.gaussian_visible) else base_rate_visible_bias(train)
        model64 = model.double()
        r = ais_log_partition(model64, num_runs=a.ais_runs, num_betas=a.ais_betas, base_visible_bias=base,
                              generator=g, progress=True)
        results.update(log_z=r.log_z, log_z_stderr=r.stderr, ais_runs=r.num_runs, ais_betas=r.num_betas)
        print(str(r))
        if test is not None:
            ll = ais_log_likelihood(model64, test.double(), r, generator=g)
            results.update(test_log_likelihood=float(ll.mean()), test_log_likelihood_sem=float(ll.std() / math.sqrt(len(ll))),
                           test_examples=len(ll))
            kind = "exact -F(v)" if not [l for l in range(1, model.num_layers) if l not in model.default_summed_layers()] \
                else "importance-sampled posterior"
            print(f"test log-likelihood: {float(ll.mean()):.3f} nats/example ({len(ll)} examples; {kind}; "
                  f"uncertainty of log Z {r.stderr:.3f})")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(results, indent=2))
        print(f"wrote {a.json}")
    return 0
