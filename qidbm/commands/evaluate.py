"""``qidbm evaluate``: FID by the DO-EM protocol and AIS log-likelihood from a checkpoint."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch


PAPER_PRESET = "paper"


def _parser() -> argparse.ArgumentParser:
    from qidbm.samplers.arguments import add_sampling_arguments

    p = argparse.ArgumentParser(prog="qidbm evaluate",
                                description="FID (pytorch-fid Inception pool3, test set), sample diagnostics (class "
                                            "coverage, precision/recall, copying) and AIS log-likelihood of a checkpoint.")
    p.add_argument("--ckpt", required=True,
                   help="checkpoint written by `qidbm fit`, or a folder of them: FID of every checkpoint (minimum and "
                        "final reported), everything else on the last one")
    p.add_argument("--num-samples", type=int, default=10000, help="generated images for FID (paper: 10000)")
    p.add_argument("--preset", choices=[PAPER_PRESET], default=None,
                   help="paper: the DO-EM paper's evaluation: 10,000 samples, FID under Taniguchi et al.'s sampler "
                        "(noise, local search, visible mode) and under 1,000 Gibbs sweeps from noise, both reported")
    add_sampling_arguments(p)
    p.add_argument("--prc-samples", type=int, default=2000,
                   help="samples (and test images) for precision/recall on Inception features (0 skips)")
    p.add_argument("--copy-samples", type=int, default=1000,
                   help="samples compared with the training set for copying (0 skips)")
    p.add_argument("--fid-weights", default=None, help="Inception weights file (else $QIDBM_FID_WEIGHTS, else download)")
    p.add_argument("--fid-backend", choices=["pytorch-fid", "torchmetrics"], default="pytorch-fid")
    p.add_argument("--fid-batch-size", type=int, default=None,
                   help="Inception batch size (default 50 on CPU: 22 img/s vs 15 at 200 on the 2-core CPU, "
                        "bench/fid_speed.py; 200 on GPU)")
    p.add_argument("--fid-reference", choices=["test", "train", "val"], default="test",
                   help="images FID compares against (default test: the published protocol); train or val "
                        "to choose among a run's checkpoints without looking at the test images")
    p.add_argument("--fid-reference-size", type=int, default=None, metavar="N",
                   help="use the reference split's first N images (default: all of test/val, the first "
                        "10000 of train, the test set's size)")
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
    from qidbm.preflight import check_device_arg, output_path_problem

    if a.prc_samples < 0 or a.copy_samples < 0:
        return f"--prc-samples and --copy-samples must be >= 0 (0 skips), got {a.prc_samples} and {a.copy_samples}"
    if a.num_samples < 2 and not a.no_fid:
        return f"--num-samples must be at least 2 for FID, got {a.num_samples}"
    if a.fid_reference_size is not None and a.fid_reference_size < 2:
        return f"--fid-reference-size must be at least 2 images (FID statistics), got {a.fid_reference_size}"
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

    from qidbm.checkpoint import load_checkpoint
    from qidbm.preflight import check_sample_memory
    from qidbm.data import datamodule_from_info
    a = _parser().parse_args(argv)
    if a.fid_batch_size is None:  # measured by bench/fid_speed.py: small batches are faster on CPU
        a.fid_batch_size = 200 if str(a.device).startswith("cuda") else 50
    problem = _argument_problem(a)
    if problem:  # before the checkpoint, the sampling and AIS: a bad argument costs nothing
        print(f"error: {problem}", file=sys.stderr)
        return 2
    ckpt_files = checkpoint_files(Path(a.ckpt)) if Path(a.ckpt).is_dir() else None
    model, info = load_checkpoint(ckpt_files[-1] if ckpt_files else a.ckpt, map_location=a.device)
    if a.preset == PAPER_PRESET:
        a.num_samples = 10000
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
    if data_info is not None and (not a.no_fid or a.ais_runs > 0 or (a.start or "noise") != "noise"):
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
        if dm is None:
            raise ValueError("FID needs the test set: this checkpoint has no data_info; retrain with `qidbm fit`")
        if a.fid_reference != "test":  # a missing split fails here, before any sampling
            try:
                dm.split_pixels(a.fid_reference)
            except ValueError as e:
                print(f"error: --fid-reference {a.fid_reference}: {e}; the run held out no images, "
                      "use --fid-reference train", file=sys.stderr)
                return 2
        specs = _specs(a, info, model.gaussian_visible)
        if ckpt_files is not None and len(ckpt_files) > 1:  # FID of every checkpoint, the primary sampling
            per = []
            for f in ckpt_files[:-1]:
                m_i, info_i = load_checkpoint(f, map_location=a.device)
                r_i = _sample_and_score(m_i, data_info, dm, specs[0], a, acc, g, diagnostics=False)
                per.append({"checkpoint": str(f), "global_step": info_i.get("global_step"), "fid": r_i["fid"]})
                print(f"{f.name} (step {info_i.get('global_step')}): FID {r_i['fid']:.3f}")
            results["fid_per_checkpoint"] = per
        scored = []
        for i, spec in enumerate(specs):
            r = _sample_and_score(model, data_info, dm, spec, a, acc, g, diagnostics=True,
                                  save=a.save_samples if i == 0 else None)
            scored.append(r)
        results.update(scored[0])  # the primary sampling at the top level
        if len(scored) > 1:
            results["samplings"] = scored
        if "fid_per_checkpoint" in results:
            results["fid_per_checkpoint"].append({"checkpoint": str(ckpt_files[-1]), "global_step": info.get("global_step"),
                                                   "fid": scored[0]["fid"]})
            best = min(results["fid_per_checkpoint"], key=lambda r: r["fid"])
            results.update(fid_final=scored[0]["fid"], fid_min=best["fid"], fid_min_checkpoint=best["checkpoint"])
            print(f"FID over {len(ckpt_files)} checkpoints: minimum {best['fid']:.3f} ({Path(best['checkpoint']).name}), "
                  f"final {scored[0]['fid']:.3f}")
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


def checkpoint_files(folder: Path) -> list[Path]:
    """The checkpoints of a run folder (or its checkpoints/), one per training step, in step order."""
    sub = folder / "checkpoints"
    files = sorted((sub if sub.is_dir() else folder).glob("*.ckpt"))
    if not files:
        raise FileNotFoundError(f"no .ckpt files in {folder} (or its checkpoints/); pass a checkpoint or a run's folder")
    by_step: dict = {}
    for f in files:
        step = torch.load(f, map_location="cpu", weights_only=False, mmap=True).get("global_step", -1)
        if step not in by_step or f.name != "last.ckpt":
            by_step[step] = f
    return [by_step[k] for k in sorted(by_step)]


def _specs(a: argparse.Namespace, info: dict, gaussian_visible: bool) -> list:
    """The samplings to score: the paper preset's two, else the one the options and checkpoint give."""
    from qidbm.samplers.arguments import spec_from_arguments
    from qidbm.samplers.drawing import SamplingSpec

    if a.preset == PAPER_PRESET:
        step = a.quantum_step or "paper"
        return [SamplingSpec(num_steps=0, start="noise", output="local_search", quantum_step=step, batch_size=a.batch_size),
                SamplingSpec(num_steps=1000, start="noise", output="mean", quantum_step=step, batch_size=a.batch_size)]
    return [spec_from_arguments(a, info.get("hyper_parameters"), gaussian_visible)]


def _sample_and_score(model, data_info: dict, dm, spec, a: argparse.Namespace, acc, g, *, diagnostics: bool,
                      save: str | None = None) -> dict:
    """Draw ``a.num_samples`` samples with ``spec``; FID against the test set and, with ``diagnostics``,
    class coverage, precision/recall and the copying check."""
    import numpy as np

    from qidbm.images import save_grid, visible_to_images
    from qidbm.metrics import compute_fid, data_reference_key, frechet_distance, reference_size, reference_stats
    from qidbm.samplers import drawing

    data = None
    if spec.start != "noise":
        data = torch.cat([b for _, b in zip(range(-(-a.num_samples // dm.batch_size)), dm.train_dataloader())])
    t0 = time.time()
    x, stats = drawing.draw(model, a.num_samples, spec, data=data, generator=g, progress=True)
    out: dict = {"sampling": spec.describe(), "num_samples": a.num_samples, "sampling_seconds": round(time.time() - t0, 2)}
    images = visible_to_images(x, data_info)
    for l, rate in stats.acceptance().items():
        print(f"acceptance rate (quantum layer {l}): {float(rate):.4f}")
        out[f"acceptance_layer{l}"] = float(rate)
    if stats.swap_rates():
        out["replica_swap_rates"] = [float(r) for r in stats.swap_rates().values()]
        print("replica swap acceptance (pairs 0-1, 1-2, ...): " + ", ".join(f"{r:.3f}" for r in out["replica_swap_rates"]))
    if save:
        folder = Path(save)
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "samples.npy", images.numpy())
        save_grid(images[:100], folder / "samples.png", nrow=10)
    t0 = time.time()
    n_pr = min(a.prc_samples, len(images)) if diagnostics and acc is not None else 0
    gen_features = None
    split = a.fid_reference
    n_ref = reference_size(split, a.fid_reference_size, dm.split_pixels(split).shape[0])
    if a.fid_backend == "pytorch-fid":
        key = data_reference_key(data_info, split, n_ref)
        mu_r, sigma_r = reference_stats(key, lambda: dm.reference_images(split, n_ref), accumulator=acc)
        acc.reset()
        if n_pr:  # the first n_pr samples' features serve FID and precision/recall alike
            gen_features = torch.cat([acc.features(b) for b in images[:n_pr].split(a.fid_batch_size)])
            acc.update_features(gen_features)
        if n_pr < len(images):
            acc.update(images[n_pr:])
        mu, sigma = acc.compute_stats()
        fid = float(frechet_distance(mu, sigma, mu_r, sigma_r, method=a.fid_method))
    else:
        fid = compute_fid(images, dm.reference_images(split, n_ref), backend="torchmetrics", weights_path=a.fid_weights,
                          batch_size=a.fid_batch_size, device=a.device, progress=True)
    reference = split if n_ref is None else f"{split} (first {n_ref})"
    out.update(fid=fid, fid_backend=a.fid_backend, fid_reference=reference, fid_seconds=round(time.time() - t0, 2))
    print(f"FID ({a.fid_backend}, {a.num_samples} samples vs {data_info['dataset']} {reference}, "
          f"{data_info['encoding']}): {fid:.3f}   [sampling: {spec.describe()}]")
    if not diagnostics:
        return out
    from qidbm.metrics.classifier import CLASSIFIER_FILES, class_coverage

    if data_info["dataset"] in CLASSIFIER_FILES and images.shape[-2:] == (28, 28):
        cov = class_coverage(images, data_info["dataset"])
        out["class_coverage"] = cov
        print("class coverage: " + ", ".join(f"{c} {100 * f:.1f}%" for c, f in zip(cov["classes"], cov["fractions"]))
              + f" ({cov['classes_in_range']}/10 within 4-20 %)")
    if gen_features is not None and n_pr > 3:
        from qidbm.metrics.precision_recall import precision_recall

        test = dm.test_images()[:n_pr]
        real_features = torch.cat([acc.features(b) for b in test.split(a.fid_batch_size)])
        pr = precision_recall(gen_features, real_features)
        out["precision_recall"] = {**pr, "samples": n_pr, "features": "Inception pool3"}
        print(f"precision {pr['precision']:.3f}, recall {pr['recall']:.3f} ({n_pr} samples vs {n_pr} test images, "
              "Inception features, k=3)")
    if a.copy_samples:
        from qidbm.metrics.precision_recall import copying_report

        n = min(a.copy_samples, len(images))
        train = torch.cat([dm.decode(b[0] if isinstance(b, (list, tuple)) else b) for b in dm.train_dataloader()])
        test = dm.test_images()[:n]
        rep = copying_report(images[:n].flatten(1), train.flatten(1), test.flatten(1))
        out["copying"] = {**rep, "samples": n}
        print(f"nearest training image: median distance {rep['sample_nn_median']:.2f} for samples vs "
              f"{rep['test_nn_median']:.2f} for test images (ratio {rep['ratio']:.2f}; "
              f"{100 * rep['fraction_closer_than_test_1pct']:.1f}% of samples closer than 99% of test images)")
    return out
