"""The `qidbm` command's top level (help, version, unknown commands), the W&B logger overlay, the
progress-bar policy for logs (qidbm.progress) and the package metadata."""

import importlib.metadata
import io
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tqdm import tqdm

import qidbm
from qidbm import progress
from qidbm.cli import COMMANDS, main

REPO = Path(__file__).resolve().parents[1]


# --- help and version -------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [[], ["-h"], ["--help"]], ids=["no-arguments", "-h", "--help"])
def test_top_level_help_lists_the_commands(argv, capsys):
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: qidbm COMMAND")
    lines = out.splitlines()
    for cmd in ("fit", "validate", "sample", "evaluate"):
        assert sum(line.split()[:1] == [cmd] for line in lines) == 1, f"one line for {cmd} in:\n{out}"
        assert f"qidbm {cmd} --help" in out
    assert "Lightning Trainer command line tool" not in out and "predict" not in out
    assert list(COMMANDS) == ["fit", "validate", "sample", "evaluate"]


def test_version_is_the_package_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"qidbm {qidbm.__version__}"
    assert importlib.metadata.version("qidbm") == qidbm.__version__


@pytest.mark.skipif(shutil.which("qidbm") is None, reason="the qidbm console script is not installed")
def test_installed_command_prints_help_and_version():
    version = subprocess.run(["qidbm", "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.strip() == f"qidbm {qidbm.__version__}"
    helped = subprocess.run(["qidbm"], capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0 and "evaluate" in helped.stdout


@pytest.mark.parametrize("argv", [["train"], ["test"], ["predict"], ["--bogus"]])
def test_unknown_command_or_option_is_an_error_that_lists_the_commands(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "usage: qidbm COMMAND" in err
    if not argv[0].startswith("-"):
        assert f"unknown command {argv[0]!r}" in err and "fit, validate, sample, evaluate" in err


def test_fit_help_starts_with_a_short_usage_and_the_common_calls(capsys):
    with pytest.raises(SystemExit) as e:
        main(["fit", "--help"])
    assert e.value.code in (0, None)
    out = capsys.readouterr().out
    head = out.split("\noptions:")[0]
    assert head.startswith("usage: qidbm fit [-h] [-c CONFIG]") and len(head.splitlines()) < 30
    assert "--print_config" in head and "--model.help" in head
    assert "--trainer.max_epochs" in out  # Lightning's full option list follows


# --- W&B beside the run's loggers ---------------------------------------------------------------


def _print_config(capsys, *configs):
    with pytest.raises(SystemExit) as e:
        main(["fit", *[a for c in configs for a in ("--config", str(c))], "--print_config"])
    assert e.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


def test_wandb_overlay_adds_wandb_beside_the_configs_loggers(capsys):
    cfg = _print_config(capsys, REPO / "configs/quickstart.yaml", REPO / "configs/loggers/wandb.yaml")
    loggers = [lg["class_path"] for lg in cfg["trainer"]["logger"]]
    assert loggers == ["lightning.pytorch.loggers.CSVLogger", "lightning.pytorch.loggers.TensorBoardLogger",
                       "qidbm.lightning.WandbLogger"]
    assert cfg["trainer"]["logger"][2]["init_args"]["offline"] is None  # offline unless a key is set


def test_wandb_overlay_turns_a_single_logger_into_a_list(capsys):
    cfg = _print_config(capsys, REPO / "configs/nqs_ho2d_noninteracting.yaml", REPO / "configs/loggers/wandb.yaml")
    assert [lg["class_path"] for lg in cfg["trainer"]["logger"]] == [
        "lightning.pytorch.loggers.CSVLogger", "qidbm.lightning.WandbLogger"]


def test_wandb_alone_keeps_lightnings_default_logger_in_front():
    from lightning.pytorch.loggers import CSVLogger

    from qidbm.cli import _wandb_only
    from qidbm.lightning import WandbLogger

    wandb = WandbLogger(offline=True, save_dir="unused")
    assert _wandb_only([wandb]) == [wandb]  # the fit then runs with logger=True plus this W&B logger
    assert _wandb_only([CSVLogger("unused"), wandb]) is None
    assert _wandb_only(wandb) is None and _wandb_only(None) is None and _wandb_only(False) is None


@pytest.fixture
def no_wandb_credentials(monkeypatch, tmp_path):
    for var in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc


def test_wandb_is_offline_without_an_api_key(no_wandb_credentials, monkeypatch):
    from qidbm.lightning.loggers import WandbLogger, wandb_should_be_offline

    assert wandb_should_be_offline() and WandbLogger(save_dir="unused")._offline
    with pytest.raises(ValueError, match="wandb login"):
        WandbLogger(save_dir="unused", log_model=True)
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)
    assert not wandb_should_be_offline()
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_should_be_offline()


# --- progress bars in logs ----------------------------------------------------------------------


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_policy_throttles_only_when_not_a_terminal(monkeypatch):
    monkeypatch.delenv("TQDM_MININTERVAL", raising=False)
    log, term = io.StringIO(), _Terminal()
    assert not progress.is_terminal(log) and progress.is_terminal(term)
    assert progress.tqdm_kwargs(term, mininterval=1.0) == {"file": term, "mininterval": 1.0}
    kw = progress.tqdm_kwargs(log, mininterval=1.0)
    assert kw["mininterval"] == kw["delay"] == progress.LOG_INTERVAL and kw["maxinterval"] >= progress.LOG_INTERVAL
    monkeypatch.setenv("TQDM_MININTERVAL", "5")
    assert progress.tqdm_kwargs(log)["mininterval"] == 5.0
    monkeypatch.setenv("TQDM_MININTERVAL", "often")
    with pytest.raises(ValueError, match="TQDM_MININTERVAL"):
        progress.tqdm_kwargs(log)


def test_a_short_bar_writes_nothing_to_a_log_and_draws_on_a_terminal(monkeypatch):
    monkeypatch.delenv("TQDM_MININTERVAL", raising=False)
    log, term = io.StringIO(), _Terminal()
    for stream in (log, term):
        for _ in tqdm(range(1000), desc="sweeps", **progress.tqdm_kwargs(stream, mininterval=0)):
            pass
    assert log.getvalue() == ""
    assert term.getvalue().count("\r") > 10


def test_lightning_bar_for_logs_redraws_at_most_once_per_interval(capsys):
    def draws(interval):
        bar = progress.LogProgressBar(interval=interval).init_train_tqdm()
        bar.reset(total=500)
        for n in range(1, 501):  # what TQDMProgressBar does per batch: set the count, refresh
            bar.n = n
            bar.refresh()
            bar.set_postfix({"loss": n})
        bar.close()
        return capsys.readouterr().out.count("\r")

    assert draws(3600.0) <= 3  # the first draw, the close
    assert draws(0.0) > 500


def test_fit_throttles_lightnings_bar_when_stdout_is_not_a_terminal(tmp_path, capsys):
    cfg = tmp_path / "vmc.yaml"
    cfg.write_text(f"""
seed_everything: 0
trainer:
  max_steps: 40
  accelerator: cpu
  devices: 1
  logger: false
  enable_checkpointing: false
  enable_model_summary: false
  default_root_dir: {tmp_path / "run"}
model:
  class_path: qidbm.nqs.VMCModule
  init_args:
    wavefunction:
      class_path: qidbm.nqs.RBMWaveFunction
      init_args: {{n_particles: 1, dim: 1, n_hidden: 2}}
    hamiltonian:
      class_path: qidbm.nqs.HarmonicTrap
      init_args: {{n_particles: 1, dim: 1}}
    sampler:
      class_path: qidbm.nqs.MetropolisSampler
    n_chains: 4
    samples_per_chain: 2
    burn_in: 2
    steps_per_epoch: 4
    num_threads: 1
""")
    assert not sys.stdout.isatty()  # pytest captures it
    assert main(["fit", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "Epoch 9" in out  # the final state is drawn when the bar closes
    assert out.count("\r") <= 4  # 10 epochs of 4 steps: Lightning's own bar redraws 100 times


# --- package files --------------------------------------------------------------------------------


def test_package_files_and_metadata():
    meta = importlib.metadata.metadata("qidbm")
    assert (REPO / "LICENSE").read_text().startswith("MIT License")
    assert "Copyright (c) 2026 the qidbm authors" in (REPO / "LICENSE").read_text()
    assert "## [Unreleased]" in (REPO / "CHANGELOG.md").read_text()
    assert "## [0.1.0]" in (REPO / "CHANGELOG.md").read_text()
    citation = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0" and str(citation["version"]) == qidbm.__version__
    arxiv = {i["value"] for ref in citation["references"] for i in ref.get("identifiers", [])}
    assert {"arXiv:2507.22786", "arXiv:2305.19684", "arXiv:2210.10318", "arXiv:2502.17562"} <= arxiv
    assert meta["Version"] == qidbm.__version__
    assert meta["License-Expression"] == "MIT" and "LICENSE" in (meta.get_all("License-File") or [])
