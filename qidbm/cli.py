"""The ``qidbm`` command.

* ``qidbm fit|validate|test --config CONFIG.yaml``: Lightning's ``LightningCLI``; a config
  names the LightningModule (``model: class_path: qidbm.lightning.BoltzmannModule``) with
  its machine, the data module (``data:``), the trainer, loggers and callbacks.
  ``qidbm fit --print_config`` prints the full resolved config.
* ``qidbm sample --ckpt PATH --num-samples N --out DIR_OR_FILE``: samples from a checkpoint.
* ``qidbm evaluate --ckpt PATH``: FID (DO-EM protocol) and AIS log-likelihood.
"""

from __future__ import annotations

import sys
from pathlib import Path


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


def _quiet_known_warnings() -> None:
    """Silence warnings that say nothing about the user's run (an empty validation loader when
    ``val_size: 0``, a deprecation inside Lightning)."""
    import warnings

    warnings.filterwarnings("ignore", message=r".*Total length of `list` across ranks is zero.*")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    warnings.filterwarnings("ignore", message=r".*You defined a `validation_step` but have no `val_dataloader`.*")


def main(argv: list[str] | None = None) -> int:
    # before torch is imported, so that torch's own start-up allocations follow it too (qidbm/allocator.py)
    from qidbm.allocator import reuse_freed_memory

    reuse_freed_memory()
    _quiet_known_warnings()
    from_sys = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "sample":
        from qidbm.sample import cmd_sample

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
