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

from qidbm.preflight import check_device_arg, check_sample_memory, output_path_problem

OWN_COMMANDS = ("sample", "evaluate")


def _lightning_cli(args: list[str] | None) -> None:
    from lightning.pytorch.cli import LightningCLI

    class QidbmCLI(LightningCLI):
        """LightningCLI that installs the reliability defaults (qidbm.lightning):
        atomic checkpoint writes (AtomicCheckpointIO) unless the config names a CheckpointIO
        plugin, a numerical-fault guard (FaultGuard(), on_fault="raise") unless the config
        lists a FaultGuard of its own (e.g. one with on_fault: restore), MidEpochResume (a
        resume from a mid-epoch checkpoint continues with the batch where the run was), RunLock
        (one fit per run folder) and FinalCheckpoint (last.ckpt at the final step and on SIGTERM)."""

        def _parse_ckpt_path(self):
            # LightningCLI's own version of this reads the checkpoint's hyperparameters before any
            # trainer exists and writes them over the config: the checkpoint's module class replaces
            # the config's (an NQS VMCModule checkpoint given to a BoltzmannModule config would train
            # the NQS model into this config's run folder), and the checkpoint's lr, cd_steps, ...
            # replace the values given on the command line, silently. Here: the file must read (clear
            # error otherwise) and come from the config's module class; a config that names its module
            # is used as given (BoltzmannModule reports and applies what differs from the checkpoint);
            # only a config without a model takes the checkpoint's hyperparameters, as in Lightning.
            from qidbm.checkpoint import CheckpointError, not_a_checkpoint_message, read_checkpoint

            if not self.config.get("subcommand"):
                return
            sub = self.config.subcommand
            path = self.config[sub].get("ckpt_path")
            if not path or not Path(path).is_file():
                return  # "last", "best", "hpc" or a missing file: the trainer resolves them (and says so)
            ckpt = read_checkpoint(path, map_location="cpu")
            if not isinstance(ckpt, dict):
                raise CheckpointError(not_a_checkpoint_message(path))
            hparams = dict(ckpt.get("hyper_parameters") or {})
            hparams.pop("_instantiator", None)
            model = self.config[sub].get("model")
            _check_checkpoint_module(path, hparams.get("_class_path"), model)
            if not hparams or (hasattr(model, "get") and model.get("class_path")):
                return
            if "_class_path" in hparams:
                hparams = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
            try:
                self.config = self.parser.parse_object({sub: {"model": hparams}}, self.config)
            except SystemExit:
                sys.stderr.write("Parsing of ckpt_path hyperparameters failed!\n")
                raise

        def before_fit(self):
            # lock the run folders before the fit sets its loggers up (a second run's CSVLogger would
            # delete the first run's metrics.csv there, before any callback hook)
            from qidbm.lightning.run_lock import RunLock

            for cb in self.trainer.callbacks:
                if isinstance(cb, RunLock):
                    cb.lock_before_fit(self.trainer)

        def _instantiate_trainer(self, config, callbacks):
            from lightning.pytorch.plugins.io import CheckpointIO

            from qidbm.lightning.checkpoint_io import AtomicCheckpointIO
            from qidbm.lightning.fault_guard import FaultGuard
            from qidbm.lightning.final_checkpoint import FinalCheckpoint
            from qidbm.lightning.mid_epoch_resume import MidEpochResume
            from qidbm.lightning.run_lock import RunLock

            plugins = config.get("plugins")
            plugins = [] if plugins is None else list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
            if not any(isinstance(p, CheckpointIO) for p in plugins):
                plugins.append(AtomicCheckpointIO())
            config["plugins"] = plugins
            given = config.get("callbacks") or []
            given = given if isinstance(given, list) else [given]
            present = list(given) + list(callbacks)
            if not any(isinstance(c, RunLock) for c in present):
                # first in the list: it locks the run folders before any callback writes there
                # (LightningCLI's SaveConfigCallback writes config.yaml at setup)
                given = [RunLock()] + given
            config["callbacks"] = given
            if not any(isinstance(c, FaultGuard) for c in present):
                callbacks = list(callbacks) + [FaultGuard()]
            if not any(isinstance(c, MidEpochResume) for c in present):
                callbacks = list(callbacks) + [MidEpochResume()]
            if not any(isinstance(c, FinalCheckpoint) for c in present):
                callbacks = list(callbacks) + [FinalCheckpoint()]
            return super()._instantiate_trainer(config, callbacks)

    QidbmCLI(
        model_class=None,
        datamodule_class=None,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        args=args,
    )


def _check_checkpoint_module(path, ckpt_class: str | None, model_config) -> None:
    """``ValueError`` when the checkpoint at ``path`` was written by another LightningModule class than
    the config's ``model`` (e.g. an NQS ``VMCModule`` checkpoint for a ``BoltzmannModule`` config)."""
    want = model_config.get("class_path") if hasattr(model_config, "get") else None
    if not ckpt_class or not want:
        return
    a, b = _resolve(ckpt_class), _resolve(want)
    if (a is b) if (a is not None and b is not None) else ckpt_class.rsplit(".", 1)[-1] == want.rsplit(".", 1)[-1]:
        return
    raise ValueError(
        f"checkpoint {path} was written by a {ckpt_class} run, but this config trains a {want}: a checkpoint only "
        "resumes the kind of module that wrote it. Resume it with its own config (the config.yaml in its run folder), "
        "or start this run without --ckpt_path"
    )


def _resolve(class_path: str):
    import importlib

    module, _, name = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return None


def _sample_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qidbm sample", description="Draw samples from a qidbm checkpoint.")
    p.add_argument("--ckpt", required=True, help="checkpoint written by `qidbm fit` (.ckpt)")
    p.add_argument("--num-samples", type=int, default=64, help="number of samples (default 64)")
    p.add_argument("--out", default="samples", help="output folder, or a .png file path (default ./samples)")
    from qidbm.samplers.arguments import add_sampling_arguments

    add_sampling_arguments(p)
    return p


def _load_data(info: dict, root: str | None):
    from qidbm.data import datamodule_from_info

    dm = datamodule_from_info(info, root=root)
    dm.setup("fit")
    return dm


def cmd_sample(argv: list[str]) -> int:
    import numpy as np
    import torch

    from qidbm.atomic import atomic_write
    from qidbm.checkpoint import load_checkpoint
    from qidbm.lightning.callbacks import save_grid, visible_to_images
    from qidbm.samplers import drawing
    from qidbm.samplers.arguments import spec_from_arguments

    a = _sample_parser().parse_args(argv)
    if a.num_samples < 1:
        print(f"error: --num-samples must be a positive integer, got {a.num_samples}", file=sys.stderr)
        return 2
    out = Path(a.out)
    # everything that can be checked before the sampling is: device, output path, memory
    problem = check_device_arg(a.device) or output_path_problem(out, folder=out.suffix.lower() != ".png")
    if problem:
        print(f"error: {problem}" if problem.startswith("--") else f"error: --out {a.out}: {problem}; choose another "
              "path (nothing was sampled)", file=sys.stderr)
        return 2
    model, info = load_checkpoint(a.ckpt, map_location=a.device)
    spec = spec_from_arguments(a, info.get("hyper_parameters"))
    try:
        check_sample_memory(a.num_samples, model.n_visible, a.device)
    except MemoryError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    data = None
    if spec.start != "noise":
        dm = _load_data(info["data_info"], a.data_root)
        data = torch.cat([b for _, b in zip(range(-(-a.num_samples // dm.batch_size)), dm.train_dataloader())])
    g = torch.Generator(device=a.device)
    g.manual_seed(a.seed)
    x, stats = drawing.draw(model, a.num_samples, spec, data=data, generator=g, progress=True)
    images = visible_to_images(x, info.get("data_info"))
    if out.suffix.lower() == ".png":
        png, arr = out, out.with_suffix(".npy")
    else:
        out.mkdir(parents=True, exist_ok=True)
        png, arr = out / "samples.png", out / "samples.npy"
    save_grid(images[: min(len(images), 400)], png)
    atomic_write(arr, lambda f: np.save(f, images.numpy()), fsync=False)
    print(f"model: {info['model_class']} {info['model_config']}")
    print(f"sampling: {spec.describe()}")
    for l, rate in stats.acceptance().items():
        print(f"acceptance rate (quantum layer {l}): {float(rate):.4f}")
    dataset = (info.get("data_info") or {}).get("dataset")
    from qidbm.metrics.classifier import CLASSIFIER_FILES, class_coverage

    if dataset in CLASSIFIER_FILES:
        cov = class_coverage(images, dataset)
        shares = ", ".join(f"{c} {100 * f:.1f}%" for c, f in zip(cov["classes"], cov["fractions"]))
        print(f"classes (shipped {dataset} classifier): {shares}; {cov['classes_in_range']}/10 within 4-20 %")
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
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from qidbm.lightning.final_checkpoint import SIGTERM_EXIT_STATUS

    try:
        _lightning_cli(None if from_sys else argv)
    except SIGTERMException:
        # Lightning ends a fit on SIGTERM with SIGTERMException, a SystemExit whose status is 0: a
        # scheduler would read that as a finished job. FinalCheckpoint has written last.ckpt and said so.
        print(f"qidbm: stopped by SIGTERM; exit status {SIGTERM_EXIT_STATUS}", file=sys.stderr)
        return SIGTERM_EXIT_STATUS
    return 0


if __name__ == "__main__":
    sys.exit(main())
