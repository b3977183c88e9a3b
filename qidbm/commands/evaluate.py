"""``qidbm evaluate``: FID by the DO-EM protocol, sample diagnostics and AIS log-likelihood of a checkpoint.

This module parses the arguments, prints and writes the JSON file; the evaluation is :func:`qidbm.evaluate`'s
(:mod:`qidbm.api`), which prints an estimate of the run time (timed on small pieces) before the heavy work.
"""

from __future__ import annotations

import argparse
import json
import sys

from qidbm.api import EVALUATION_DEFAULTS, PRESETS
from qidbm.commands.sample import add_checkpoint_argument, add_debug_argument, cli_flag

PAPER_PRESET = "paper"
QUICK_PRESET = "quick"


def _default(key: str) -> str:
    """The default of a setting in words: without a preset, and under each preset that changes it."""
    words = [f"{EVALUATION_DEFAULTS[key]}"] + [f"{v} with --preset {p}" for p, s in PRESETS.items() if key in s
                                              for v in [s[key]]]
    return "default " + ", ".join(words)


def _parser() -> argparse.ArgumentParser:
    from qidbm.samplers.arguments import add_sampling_arguments

    p = argparse.ArgumentParser(prog="qidbm evaluate",
                                description="FID (pytorch-fid Inception pool3, test set), sample diagnostics (class "
                                            "coverage, precision/recall, copying) and AIS log-likelihood of a checkpoint "
                                            "(in Python: qidbm.evaluate(path, preset=...)). Prints an estimate of the "
                                            "run time first.")
    add_checkpoint_argument(p, "checkpoint written by `qidbm fit` (or shipped in checkpoints/), or a folder of them: "
                               "FID of every checkpoint (minimum and final reported), everything else on the last one")
    p.add_argument("--num-samples", type=int, default=None,
                   help=f"generated images for FID ({_default('num_samples')})")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="quick: minutes on a CPU (1,000 samples against the first 1,000 test images, no "
                        "precision/recall, AIS 16 chains x 1,000 distributions on 1,000 test images); "
                        "paper: the DO-EM paper's evaluation: 10,000 samples, FID under Taniguchi et al.'s sampler "
                        "(noise, local search, visible mode) and under 1,000 Gibbs sweeps from noise, both reported. "
                        "Options given explicitly win over the preset")
    add_sampling_arguments(p)
    p.add_argument("--prc-samples", type=int, default=None,
                   help=f"samples (and test images) for precision/recall on Inception features (0 skips; "
                        f"{_default('prc_samples')})")
    p.add_argument("--copy-samples", type=int, default=None,
                   help=f"samples compared with the training set for copying (0 skips; {_default('copy_samples')})")
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
                        "10000 of train, the test set's size; 1000 with --preset quick)")
    p.add_argument("--fid-method", choices=["sqrtm", "eigh"], default="eigh",
                   help="matrix square root of the Frechet distance: eigh (default; equals pytorch-fid's sqrtm "
                        "to ~1e-12 relative, tested, and is much faster) or sqrtm (pytorch-fid's own numerics)")
    p.add_argument("--no-fid", action="store_true", help="skip FID (and the sampling)")
    p.add_argument("--ais-runs", type=int, default=None, help=f"AIS chains (0 skips AIS; {_default('ais_runs')})")
    p.add_argument("--ais-betas", type=int, default=None,
                   help=f"AIS intermediate distributions ({_default('ais_betas')})")
    p.add_argument("--ais-test-examples", type=int, default=None,
                   help=f"test examples for the log-likelihood ({_default('ais_test_examples')})")
    p.add_argument("--raise-runs", type=int, default=0, metavar="N",
                   help="also RAISE (reverse AIS), the conservative estimate, with N reverse chains per test image on "
                        "the same images and temperatures as AIS (default 0: skip; costs about N x test images / "
                        "--ais-runs times AIS): AIS errs high, RAISE low")
    p.add_argument("--binarization", choices=["threshold", "stochastic"], default=None,
                   help="MNIST / Fashion-MNIST test set to score on: threshold (x > 0.5) or stochastic (each pixel "
                        "Bernoulli(x), a fixed draw from --binarize-seed, as the likelihood literature); default: "
                        "the one the machine was trained on")
    p.add_argument("--binarize-seed", type=int, default=0, help="seed of the stochastically binarised test set (default 0)")
    p.add_argument("--save-samples", default=None, help="folder to save the generated images (.npy + grid .png)")
    p.add_argument("--json", default=None, help="write the results to this JSON file")
    add_debug_argument(p)
    return p


def cmd_evaluate(argv: list[str]) -> int:
    from qidbm.api import SampleMemoryError, SettingError, evaluate
    from qidbm.atomic import OutputWriteError, atomic_write_set
    from qidbm.preflight import output_path_problem
    from qidbm.samplers.arguments import SAMPLING_OPTIONS

    a = _parser().parse_args(argv)
    if a.json:
        problem = output_path_problem(a.json, folder=False)
        if problem:  # before the checkpoint, the sampling and AIS: a bad argument costs nothing
            print(f"qidbm evaluate: error: --json {a.json}: {problem}; choose another path (nothing was computed)",
                  file=sys.stderr)
            return 2
    try:
        results = evaluate(
            a.ckpt_path, preset=a.preset, num_samples=a.num_samples, seed=a.seed, device=a.device, fid=not a.no_fid,
            fid_weights=a.fid_weights, fid_backend=a.fid_backend, fid_batch_size=a.fid_batch_size,
            fid_reference=a.fid_reference, fid_reference_size=a.fid_reference_size, fid_method=a.fid_method,
            prc_samples=a.prc_samples, copy_samples=a.copy_samples, ais_runs=a.ais_runs, ais_betas=a.ais_betas,
            ais_test_examples=a.ais_test_examples, raise_runs=a.raise_runs, binarization=a.binarization,
            binarize_seed=a.binarize_seed, batch_size=a.batch_size, save_samples=a.save_samples,
            data_root=a.data_root, progress=True, log=lambda line: print(line, flush=True),
            **{k: getattr(a, k) for k in SAMPLING_OPTIONS})
    except (SettingError, SampleMemoryError) as e:
        print(f"qidbm evaluate: error: {e.message(cli_flag)}", file=sys.stderr)
        return 2
    if a.json:
        text = json.dumps(results, indent=2) + "\n"
        # printed first: a write that fails (a full disk) loses none of the work
        print(f"results (also written to {a.json}):\n{text}", end="", flush=True)
        try:
            atomic_write_set([(a.json, lambda f: f.write(text.encode()))], what="results")
        except OutputWriteError as e:
            print(f"qidbm evaluate: error: {e.strerror}; the results are printed above", file=sys.stderr)
            return 1
        print(f"wrote {a.json}")
    if results.get("save_samples_error"):
        print(f"qidbm evaluate: error: {results['save_samples_error']}", file=sys.stderr)
        return 1
    return 0
