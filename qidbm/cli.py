"""The ``qidbm`` command.

* ``qidbm fit|validate|test --config CONFIG.yaml``: Lightning's ``LightningCLI``; a config
  names the LightningModule (``model: class_path: qidbm.lightning.BoltzmannModule``) with
  its machine, the data module (``data:``), the trainer, loggers and callbacks.
  ``qidbm fit --print_config`` prints the full resolved config.
* ``qidbm sample --ckpt PATH --num-samples N --out DIR_OR_FILE``: samples from a checkpoint.
* ``qidbm evaluate --ckpt PATH``: FID (DO-EM protocol) and AIS log-likelihood.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

OWN_COMMANDS = ("sample", "evaluate")


def _lightning_cli(args: list[str] | None) -> None:
    from lightning.pytorch.cli import LightningCLI

    class QidbmCLI(LightningCLI):
        """LightningCLI that installs the reliability defaults (qidbm.lightning.reliability):
        atomic checkpoint writes (AtomicCheckpointIO) unless the config names a CheckpointIO
        plugin, a numerical-fault guard (FaultGuard(), on_fault="raise") unless the config
        lists a FaultGuard of its own (e.g. one with on_fault: restore), and MidEpochResume (a
        resume from a mid-epoch checkpoint continues with the batch where the run was)."""

        def _parse_ckpt_path(self):
            # LightningCLI reads the checkpoint's hyperparameters before any trainer exists: turn a
            # truncated or foreign file into a clear error here too
            try:
                super()._parse_ckpt_path()
            except (SystemExit, KeyboardInterrupt):
                raise
            except Exception as e:
                path = self.config[self.config.subcommand].get("ckpt_path")
                raise ValueError(
                    f"could not read checkpoint {path} ({type(e).__name__}: {e}). The file is truncated or not a "
                    "checkpoint: resume from another one (qidbm writes checkpoints atomically, so last.ckpt is "
                    "complete unless it was copied or edited by hand)"
                ) from e

        def _instantiate_trainer(self, config, callbacks):
            from lightning.pytorch.plugins.io import CheckpointIO

            from qidbm.lightning.reliability import AtomicCheckpointIO, FaultGuard, MidEpochResume

            plugins = config.get("plugins")
            plugins = [] if plugins is None else list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
            if not any(isinstance(p, CheckpointIO) for p in plugins):
                plugins.append(AtomicCheckpointIO())
            config["plugins"] = plugins
            given = config.get("callbacks") or []
            given = given if isinstance(given, list) else [given]
            present = list(given) + list(callbacks)
            if not any(isinstance(c, FaultGuard) for c in present):
                callbacks = list(callbacks) + [FaultGuard()]
            if not any(isinstance(c, MidEpochResume) for c in present):
                callbacks = list(callbacks) + [MidEpochResume()]
            return super()._instantiate_trainer(config, callbacks)

    QidbmCLI(
        model_class=None,
        datamodule_class=None,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        args=args,
    )


def _sample_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qidbm sample", description="Draw samples from a qidbm checkpoint.")
    p.add_argument("--ckpt", required=True, help="checkpoint written by `qidbm fit` (.ckpt)")
    p.add_argument("--num-samples", type=int, default=64, help="number of samples (default 64)")
    p.add_argument("--out", default="samples", help="output folder, or a .png file path (default ./samples)")
    _add_sampling_args(p)
    return p


def _add_sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--num-steps", type=int, default=1000, help="Gibbs sweeps per chain (default 1000)")
    p.add_argument("--start", choices=["noise", "data", "local_mode"], default="noise", help="chain start")
    p.add_argument("--output", choices=["sample", "mean", "local_mode"], default="mean", help="what is returned")
    p.add_argument("--quantum-step", choices=["paper", "exact"], default="paper", help="quantum Gibbs step")
    p.add_argument("--batch-size", type=int, default=1000, help="chains run at once")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--data-root", default=None, help="data root for --start data/local_mode")


def _load_data(info: dict, root: str | None):
    from qidbm.data import datamodule_from_info

    dm = datamodule_from_info(info, root=root)
    dm.setup("fit")
    return dm


def cmd_sample(argv: list[str]) -> int:
    import numpy as np
    import torch

    from qidbm.checkpoint import load_checkpoint
    from qidbm.lightning.callbacks import save_grid, visible_to_images
    from qidbm.sampling import SamplingSpec, draw_samples

    a = _sample_parser().parse_args(argv)
    if a.num_samples < 1:
        print(f"error: --num-samples must be a positive integer, got {a.num_samples}", file=sys.stderr)
        return 2
    spec = SamplingSpec(
        num_steps=a.num_steps, start=a.start, output=a.output, quantum_step=a.quantum_step, batch_size=a.batch_size
    )
    model, info = load_checkpoint(a.ckpt, map_location=a.device)
    data = None
    if a.start != "noise":
        dm = _load_data(info["data_info"], a.data_root)
        data = torch.cat([b for _, b in zip(range(-(-a.num_samples // dm.batch_size)), dm.train_dataloader())])
    g = torch.Generator(device=a.device)
    g.manual_seed(a.seed)
    sampler = spec.sampler()
    x = draw_samples(model, a.num_samples, spec, data=data, generator=g, progress=True, sampler=sampler)
    images = visible_to_images(x, info.get("data_info"))
    out = Path(a.out)
    if out.suffix.lower() == ".png":
        png, arr = out, out.with_suffix(".npy")
    else:
        out.mkdir(parents=True, exist_ok=True)
        png, arr = out / "samples.png", out / "samples.npy"
    save_grid(images[: min(len(images), 400)], png)
    tmp = arr.with_name(arr.stem + ".tmp.npy")
    np.save(tmp, images.numpy())
    tmp.replace(arr)
    print(f"model: {info['model_class']} {info['model_config']}")
    print(f"sampling: {spec.describe()}")
    for l, rate in sampler.acceptance().items():
        print(f"acceptance rate (quantum layer {l}): {float(rate):.4f}")
    print(f"wrote {png} (grid of {min(len(images), 400)}) and {arr} ({len(images)} images, {tuple(images.shape[1:])}, [0, 1])")
    return 0


def _quiet_known_warnings() -> None:
    """Silence warnings that say nothing about the user's run (an empty validation loader when
    ``val_size: 0``, a deprecation inside Lightning)."""
    import warnings

    warnings.filterwarnings("ignore", message=r".*Total length of `list` across ranks is zero.*")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    warnings.filterwarnings("ignore", message=r".*You defined a `validation_step` but have no `val_dataloader`.*")


def main(argv: list[str] | None = None) -> int:
    _quiet_known_warnings()
    from_sys = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "sample":
        return cmd_sample(argv[1:])
    if argv and argv[0] == "evaluate":
        from qidbm.evaluate import cmd_evaluate

        return cmd_evaluate(argv[1:])
    _lightning_cli(None if from_sys else argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
