"""Score a shipped checkpoint with the quick preset of ``qidbm.evaluate`` and print the results.

    python examples/evaluate_checkpoint.py        # FID of 1,000 samples, class coverage, AIS log-likelihood

The quick preset takes minutes on a CPU (it prints its own estimate first); ``--preset paper`` is
the DO-EM paper's evaluation (10,000 samples, two samplings; hours on a CPU). FID needs the
Inception weights: ``--fid-weights FILE`` or ``$QIDBM_FID_WEIGHTS`` (else pytorch-fid downloads them).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import qidbm

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ckpt", default=str(REPO / "checkpoints" / "dbm_mnist_binary.ckpt"), help="checkpoint file")
    p.add_argument("--preset", default="quick", choices=["quick", "paper"])
    p.add_argument("--fid-weights", default=None, help="Inception weights file (else $QIDBM_FID_WEIGHTS)")
    p.add_argument("--no-fid", action="store_true", help="skip sampling and FID")
    # smaller than the preset (explicit settings win over it), e.g. for a smoke run
    p.add_argument("--num-samples", type=int, default=None)
    p.add_argument("--fid-reference-size", type=int, default=None)
    p.add_argument("--copy-samples", type=int, default=None)
    p.add_argument("--ais-runs", type=int, default=None)
    p.add_argument("--ais-betas", type=int, default=None)
    p.add_argument("--ais-test-examples", type=int, default=None)
    a = p.parse_args(argv)

    results = qidbm.evaluate(
        a.ckpt, preset=a.preset, fid=not a.no_fid, fid_weights=a.fid_weights, num_samples=a.num_samples,
        fid_reference_size=a.fid_reference_size, copy_samples=a.copy_samples, ais_runs=a.ais_runs,
        ais_betas=a.ais_betas, ais_test_examples=a.ais_test_examples,
        log=print,  # the report line by line, as `qidbm evaluate` prints it
    )
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
