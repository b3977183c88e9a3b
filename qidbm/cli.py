"""The ``qidbm`` command.

* ``qidbm fit|validate --config CONFIG.yaml``: Lightning's ``LightningCLI``; a config names the
  LightningModule (``model: class_path: qidbm.lightning.BoltzmannModule``) with its machine, the data
  module (``data:``), the trainer, loggers and callbacks. ``qidbm fit --print_config`` prints the full
  resolved config.
* ``qidbm sample --ckpt_path PATH --num-samples N --out DIR_OR_FILE``: samples from a checkpoint
  (:mod:`qidbm.commands.sample`).
* ``qidbm evaluate --ckpt_path PATH``: FID (DO-EM protocol) and AIS log-likelihood (:mod:`qidbm.commands.evaluate`).
* ``qidbm``, ``qidbm -h``/``--help``: the list of commands; ``qidbm --version``: the version.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from jsonargparse import DefaultHelpFormatter  # no torch: `qidbm --help` stays fast

#: the commands and their one-line help, in the order ``qidbm --help`` lists them
COMMANDS = {
    "fit": "train a model from a config file (--config CONFIG.yaml)",
    "validate": "run the validation loop of a config on a checkpoint (--ckpt_path)",
    "sample": "draw samples from a checkpoint, written as .npy and .png",
    "evaluate": "score a checkpoint: FID (DO-EM protocol), AIS log-likelihood",
}
LIGHTNING_COMMANDS = ("fit", "validate")
OWN_COMMANDS = ("sample", "evaluate")

_EPILOG = """\
The options of a command: qidbm fit --help, qidbm validate --help, qidbm sample --help,
qidbm evaluate --help. Configs to start from are in configs/ (configs/quickstart.yaml is a
few minutes on a CPU); README.md and docs/ describe the options and the recipes."""

#: what ``qidbm fit --help`` / ``qidbm validate --help`` print above Lightning's option list
_CONFIG_HELP = """\
{summary}

Usually one or more config files, later ones overriding earlier ones, and a few
overrides by dotted key:
  {example}

Shorter than the list below:
  qidbm {cmd} --config CONFIG.yaml --print_config
                          the full resolved config: every key and its value
  qidbm {cmd} --model.help BoltzmannModule
                          the options of the training module; likewise
                          --data.help MNISTDataModule and
                          --trainer.callbacks.help SampleGrid
  qidbm {cmd} --model BoltzmannModule --model.model.help QiDBM
                          the options of a machine (RBM, GRBM, DBM, QiDBM, ...)

Options of the qidbm command itself (on the command line, not in a config file):
  --overwrite             qidbm fit: start a new run in folders that hold the
                          checkpoints of an earlier run, removing them (without
                          it such a fit is refused: resume that run with
                          --ckpt_path last, or give this run a new folder)
  --debug                 show the traceback of an error (also QIDBM_DEBUG=1)

Configs to start from: configs/; options explained: README.md, docs/training.md.
The complete list of options (Lightning's trainer included) follows."""

#: the first line and the example of ``qidbm fit --help`` / ``qidbm validate --help``
_CONFIG_SUMMARY = {
    "fit": ("Train a model (DO-EM / contrastive divergence) as a config file describes it.",
            "qidbm fit --config configs/quickstart.yaml --trainer.max_epochs 5 --data.init_args.batch_size 50"),
    "validate": ("Run the validation loop of a config's model and data on a checkpoint (--ckpt_path).",
                 "qidbm validate --config configs/quickstart.yaml --ckpt_path runs/quickstart/checkpoints/last.ckpt"),
}


def _top_parser() -> argparse.ArgumentParser:
    """The parser of ``qidbm`` itself: its help lists the commands (each parses its own options)."""
    from qidbm import __version__

    commands = "\n".join(f"  {name:<10}{text}" for name, text in COMMANDS.items())
    parser = argparse.ArgumentParser(
        prog="qidbm",
        usage="qidbm COMMAND [OPTIONS]",
        description="Quantum-infused Boltzmann machines (RBM, QRBM, GRBM, QGRBM, DBM, QiDBM) trained by "
                    f"DO-EM.\n\ncommands:\n{commands}",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-V", "--version", action="version", version=f"qidbm {__version__}",
                        help="print the version and exit")
    return parser


class ConfigHelpFormatter(argparse.RawDescriptionHelpFormatter, DefaultHelpFormatter):
    """jsonargparse's help formatter that keeps the line breaks of the description (the help of
    ``qidbm fit`` / ``qidbm validate``). Module level: LightningCLI's parser may be pickled."""


def _flat_options_problem(argv: list[str]) -> str | None:
    """The error for a config or flag that still uses the flat training options of qidbm 0.1
    (``cd_steps``, ``negative_start``, ...), with the objects that replace them; None otherwise."""
    import yaml

    from qidbm.legacy import LEGACY_KEYS, is_legacy, legacy_config_message

    configs, flags = [], []
    for i, arg in enumerate(argv):
        name, _, inline = arg.partition("=")
        if name in ("-c", "--config") and (inline or i + 1 < len(argv)):
            path = Path(inline or argv[i + 1])
            try:
                configs.append((path, (yaml.safe_load(path.read_text()) or {}).get("model") or {}))
            except (OSError, yaml.YAMLError, AttributeError):
                continue  # LightningCLI reports unreadable configs itself
        elif name.startswith("--model.init_args.") and name.split(".")[2] in LEGACY_KEYS - {"positive"}:
            flags.append(name)
    modules = {str(m.get("class_path")) for _, m in configs if isinstance(m, dict) and m.get("class_path")}
    if any(not c.endswith("BoltzmannModule") for c in modules):
        return None  # another module (e.g. qidbm.nqs's VMCModule) has options of its own
    for path, model in configs:
        init_args = model.get("init_args") if isinstance(model, dict) else None
        if isinstance(init_args, dict) and is_legacy(init_args):
            return f"{path}: " + legacy_config_message(init_args)
    if flags:
        return (f"{flags[0]} is a flat training option of qidbm 0.1; the options are now objects (docs/training.md): "
                "e.g. --model.init_args.negative qidbm.estimators.FromNoise --model.init_args.negative.sweeps 20 "
                "for negative_start noise and cd_steps 20, "
                "--model.init_args.optimizer.init_args.lr 0.01 for lr")
    return None


def _lightning_cli(args: list[str] | None, overwrite: bool = False) -> None:
    from lightning.pytorch.cli import LightningCLI

    import qidbm.data  # noqa: F401  (so that --data ArrayDataModule resolves by its short name)

    class QidbmCLI(LightningCLI):
        """LightningCLI that installs the reliability defaults (qidbm.lightning):
        atomic checkpoint writes (AtomicCheckpointIO) unless the config names a CheckpointIO
        plugin, a numerical-fault guard (FaultGuard(), on_fault="raise") unless the config
        lists a FaultGuard of its own (e.g. one with on_fault: restore), MidEpochResume (a
        resume from a mid-epoch checkpoint continues with the batch where the run was), RunLock
        (one fit per run folder) and FinalCheckpoint (last.ckpt at the final step and on SIGTERM).
        When standard output is not a terminal, the progress bar is qidbm.progress.LogProgressBar
        (a few lines a minute) unless the config names a progress bar. W&B alone in the loggers
        (configs/loggers/wandb.yaml appended to a config that names no logger) keeps Lightning's
        default local logger in front of it. A fit into a checkpoint folder that holds another run's
        checkpoints is refused unless it resumes that run or ``--overwrite`` is given
        (qidbm.lightning.run_lock.check_new_run_folders)."""

        @staticmethod
        def subcommands() -> dict[str, set[str]]:
            # test and predict are left out: no qidbm LightningModule has a test_step or predict_step
            return {name: skip for name, skip in LightningCLI.subcommands().items() if name in LIGHTNING_COMMANDS}

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
            from qidbm.legacy import upgrade_hparams

            hparams = upgrade_hparams(ckpt.get("hyper_parameters"))  # a checkpoint of the flat options of 0.1
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
            from qidbm.lightning.run_lock import RunLock, check_new_run_folders

            locks = [cb for cb in self.trainer.callbacks if isinstance(cb, RunLock)]
            for cb in locks:
                cb.lock_before_fit(self.trainer)
            try:  # a new run never writes into the checkpoints of another (its last.ckpt would stay the old one)
                check_new_run_folders(self.trainer, self.config_init[self.subcommand].get("ckpt_path"), overwrite)
            except BaseException:
                for cb in locks:
                    cb.release()
                    cb._checked = False
                raise

        def _instantiate_trainer(self, config, callbacks):
            from lightning.pytorch.callbacks import ProgressBar
            from lightning.pytorch.plugins.io import CheckpointIO

            from qidbm.lightning.checkpoint_io import AtomicCheckpointIO
            from qidbm.lightning.fault_guard import FaultGuard
            from qidbm.lightning.final_checkpoint import FinalCheckpoint
            from qidbm.lightning.mid_epoch_resume import MidEpochResume
            from qidbm.lightning.run_lock import RunLock
            from qidbm.progress import LogProgressBar, is_terminal

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
            if (config.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in present)
                    and not is_terminal(sys.stdout)):
                # a log file or nohup: Lightning's bar would add a line per redraw (qidbm/progress.py)
                callbacks = list(callbacks) + [LogProgressBar()]
            wandb_only = _wandb_only(config.get("logger"))
            if wandb_only:
                config["logger"] = True  # Lightning's default local logger, W&B added beside it below
            trainer = super()._instantiate_trainer(config, callbacks)
            if wandb_only:
                trainer.loggers = [*trainer.loggers, *wandb_only]
            return trainer

    QidbmCLI(
        model_class=None,
        datamodule_class=None,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={
            "formatter_class": ConfigHelpFormatter,  # jsonargparse gives a command's parser the main parser's formatter
            **{cmd: {
                "description": _CONFIG_HELP.format(cmd=cmd, summary=summary, example=example),
                "usage": f"qidbm {cmd} [-h] [-c CONFIG] [--print_config[=flags]] [--KEY VALUE ...]",
                "formatter_class": ConfigHelpFormatter,
            }
            for cmd, (summary, example) in _CONFIG_SUMMARY.items()},
        },
        args=args,
    )


def _wandb_only(loggers) -> list | None:
    """The loggers when they are a list of W&B loggers only, else ``None``.

    ``configs/loggers/wandb.yaml`` appends W&B to the config's loggers (``trainer.logger+``). A config
    that names no logger then has W&B alone and would lose the local record Lightning keeps for it
    (``Trainer(logger=True)``: TensorBoard under ``default_root_dir``); such a run gets that default
    logger with W&B beside it."""
    from lightning.pytorch.loggers import WandbLogger

    if isinstance(loggers, (list, tuple)) and loggers and all(isinstance(lg, WandbLogger) for lg in loggers):
        return list(loggers)
    return None


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


def _top_level(argv: list[str]) -> int:
    """``qidbm`` without a command, ``-h``/``--help``, ``-V``/``--version`` or an unknown command: the
    package's own help, its version, or an error that lists the commands. Returns the exit status."""
    parser = _top_parser()
    if not argv:
        parser.print_help()
        return 0
    try:
        if not argv[0].startswith("-"):
            parser.error(f"unknown command {argv[0]!r}: the commands are {', '.join(COMMANDS)} (qidbm --help)")
        parser.parse_args(argv)
    except SystemExit as e:  # argparse ends -h, --version and errors with SystemExit
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    parser.print_help()
    return 0


#: exit status of an error in what the user asked for (a missing or damaged file, a bad setting, a folder
#: in use), as argparse's usage errors; other errors that are explained in one line (a full disk, a run
#: that diverged) exit with 1, Ctrl-C with 130
USER_ERROR_STATUS = 2
INTERRUPTED_STATUS = 130
DEBUG_ENV = "QIDBM_DEBUG"


#: errors of qidbm's own that say what to do, by class name (no import of Lightning or torch to tell them)
_USER_ERROR_NAMES = {"RunFolderInUseError", "RunFolderNotEmptyError", "FIDWeightsError", "SampleMemoryError"}
_USER_ERROR_CLASSES = (ValueError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError,
                       FileExistsError)


def _error_status(e: BaseException) -> tuple[int, str] | None:
    """(exit status, one-line message) for an error the user can act on; None for a bug (traceback)."""
    from qidbm.commands.sample import cli_flag

    if isinstance(e, KeyboardInterrupt):
        return INTERRUPTED_STATUS, "interrupted (Ctrl-C); files are written atomically, so none is left half written"
    if callable(getattr(e, "message", None)):  # SettingError, SampleMemoryError: the settings as flags
        text = e.message(cli_flag)
    elif isinstance(e, OSError) and e.strerror and e.filename is None:  # "[Errno 28] ..." without the number
        text = e.strerror
    else:
        text = str(e)
    text = " ".join(str(text).split()) or type(e).__name__  # one line
    if isinstance(e, _USER_ERROR_CLASSES) or {c.__name__ for c in type(e).__mro__} & _USER_ERROR_NAMES:
        return USER_ERROR_STATUS, text
    if isinstance(e, (OSError, FloatingPointError)):  # a full disk, a quota, a run that diverged
        return 1, text
    return None


def _strip_flag(argv: list[str], flag: str) -> tuple[list[str], bool]:
    if flag not in argv:
        return argv, False
    return [a for a in argv if a != flag], True


def run(argv: list[str], *, debug: bool | None = None) -> int:
    """The ``qidbm`` command line: :func:`main` with an error the user can act on (a missing, damaged or
    refused checkpoint, a bad setting, a folder in use, a full disk, ...) printed as one line,
    ``qidbm COMMAND: error: ...``, and an exit status (2 for an error in the input, 1 for other failures
    explained in one line, 130 for Ctrl-C) instead of a traceback. ``--debug`` anywhere on the line, the
    environment variable ``QIDBM_DEBUG=1`` or ``debug=True``: the error is raised as in Python, with
    its traceback. Errors that are not explained (bugs) always show their traceback."""
    return _run(list(argv), debug=debug, from_sys=False)


def _run(argv: list[str], *, debug: bool | None, from_sys: bool) -> int:
    argv, flag = _strip_flag(argv, "--debug")
    if flag and from_sys:
        sys.argv[1:] = argv  # LightningCLI reads sys.argv (and DDP workers are started with it)
    if debug is None:
        debug = flag or os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on")
    if debug:
        return _main(argv, from_sys=from_sys)
    try:
        return _main(argv, from_sys=from_sys)
    except (SystemExit, GeneratorExit):
        raise
    except BaseException as e:
        found = _error_status(e)
        if found is None:
            raise
        status, text = found
        command = argv[0] if argv and argv[0] in COMMANDS else None
        prog = f"qidbm {command}" if command else "qidbm"
        hint = "" if isinstance(e, KeyboardInterrupt) else f" (run with --debug, or {DEBUG_ENV}=1, for the traceback)"
        print(f"{prog}: error: {text}{hint}", file=sys.stderr, flush=True)
        return status


def main(argv: list[str] | None = None) -> int:
    """Run the ``qidbm`` command with ``argv``; returns the exit status.

    Without ``argv`` (the ``qidbm`` console script, ``python -m qidbm.cli``): the command line, :func:`run`
    on ``sys.argv[1:]`` (one-line errors). With ``argv`` (Python callers, tests): errors are raised.
    ``fit`` and ``validate`` end as LightningCLI does (``--help`` and ``--print_config`` raise
    ``SystemExit``); the rest return their status."""
    if argv is None:
        return _run(list(sys.argv[1:]), debug=None, from_sys=True)
    argv, _ = _strip_flag(list(argv), "--debug")
    return _main(argv, from_sys=False)


def _main(argv: list[str], from_sys: bool) -> int:
    first = argv[0] if argv else ""
    # LightningCLI's own options before the command (`qidbm --config CONFIG.yaml fit`) go on to it
    lightning_first = first in LIGHTNING_COMMANDS or first.split("=")[0] in ("-c", "--config", "--print_config")
    if not lightning_first and first not in OWN_COMMANDS:
        return _top_level(argv)
    # before torch is imported, so that torch's own start-up allocations follow it too (qidbm/allocator.py)
    from qidbm.allocator import reuse_freed_memory

    reuse_freed_memory()
    _quiet_known_warnings()
    if argv and argv[0] == "sample":
        from qidbm.commands.sample import cmd_sample

        return cmd_sample(argv[1:])
    if argv and argv[0] == "evaluate":
        from qidbm.commands.evaluate import cmd_evaluate

        return cmd_evaluate(argv[1:])
    overwrite = False
    if "fit" in argv:
        argv, overwrite = _strip_flag(argv, "--overwrite")
        if overwrite and from_sys:
            sys.argv[1:] = argv
    problem = _flat_options_problem(argv)
    if problem:
        print(f"qidbm: error: {problem}", file=sys.stderr)
        return 2
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from qidbm.lightning.final_checkpoint import SIGINT_EXIT_STATUS, SIGTERM_EXIT_STATUS, last_stop, reset_last_stop

    reset_last_stop()
    try:
        _lightning_cli(None if from_sys else argv, overwrite=overwrite)
    except SIGTERMException:
        # Lightning ends a fit on SIGTERM with SIGTERMException, a SystemExit whose status is 0: a
        # scheduler would read that as a finished job. FinalCheckpoint has written last.ckpt and said so.
        # Ctrl-C (SIGINT) stops the same way (FinalCheckpoint's handler), with status 130.
        if last_stop()["signal"] == "SIGINT":
            print(f"qidbm: stopped by SIGINT (Ctrl-C); exit status {SIGINT_EXIT_STATUS}", file=sys.stderr)
            return SIGINT_EXIT_STATUS
        print(f"qidbm: stopped by SIGTERM; exit status {SIGTERM_EXIT_STATUS}", file=sys.stderr)
        return SIGTERM_EXIT_STATUS
    except SystemExit as e:
        # a second Ctrl-C: Lightning's shutdown after a KeyboardInterrupt ends with sys.exit(1)
        if e.code == 1 and last_stop()["aborted"]:
            print(f"qidbm: aborted by a second Ctrl-C; exit status {SIGINT_EXIT_STATUS}", file=sys.stderr)
            return SIGINT_EXIT_STATUS
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
