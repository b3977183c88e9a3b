"""Fault injectors used by the reliability tests (importable from configs as tests.reliability.faults.X)."""

from __future__ import annotations

import os
import signal

import lightning as L
import torch


class KillAt(L.Callback):
    """SIGKILL this very process when the batch of global step ``step`` starts: no cleanup, no save."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class RaiseOnRank(L.Callback):
    """Raise ``RuntimeError`` on DDP rank ``rank`` at global step ``step`` (one failing worker)."""

    def __init__(self, rank: int = 1, step: int = 2) -> None:
        self.rank, self.step = rank, step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_rank == self.rank and trainer.global_step == self.step:
            raise RuntimeError(f"injected failure on rank {self.rank} at step {self.step}")


class DumpState(L.Callback):
    """At the start of training (after any restore) and at its end, save this rank's parameters,
    chains, generator state, optimizer state and step to ``<out>/{start,end}_rank<r>.pt``."""

    def __init__(self, out: str) -> None:
        self.out = out

    def _dump(self, trainer, pl_module, tag):
        os.makedirs(self.out, exist_ok=True)
        torch.save({
            "params": {n: p.detach().cpu().clone() for n, p in pl_module.named_parameters()},
            "chains": None if pl_module.chains is None else [c.cpu() for c in pl_module.chains],
            "generator": pl_module.generator.get_state(),
            "optimizer": trainer.optimizers[0].state_dict(),
            "global_step": trainer.global_step,
            "batch_idx": trainer.fit_loop.epoch_loop.batch_progress.current.completed,
        }, os.path.join(self.out, f"{tag}_rank{trainer.global_rank}.pt"))

    def on_train_start(self, trainer, pl_module):
        self._dump(trainer, pl_module, "start")

    def on_train_end(self, trainer, pl_module):
        self._dump(trainer, pl_module, "end")


class SignalAt(L.Callback):
    """Send ``signum`` (default SIGTERM) to this very process when the batch of global step ``step``
    starts, as a scheduler or ``timeout`` would; Lightning's handler must be installed (it is during fit)."""

    def __init__(self, step: int, signum: str = "SIGTERM") -> None:
        self.step, self.signum = step, getattr(signal, signum)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            if signal.getsignal(self.signum) in (signal.SIG_DFL, None):
                raise RuntimeError(f"no handler for {self.signum!r}: it would kill the process")
            os.kill(os.getpid(), self.signum)


class PauseAt(L.Callback):
    """At the batch of global step ``step``: create ``<flag>.paused`` and wait (up to ``timeout`` s)
    until ``flag`` exists, so that a test can act while this fit is mid-run."""

    def __init__(self, step: int, flag: str, timeout: float = 120.0) -> None:
        self.step, self.flag, self.timeout = step, flag, timeout

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            import time

            open(self.flag + ".paused", "w").close()
            t0 = time.time()
            while not os.path.exists(self.flag) and time.time() - t0 < self.timeout:
                time.sleep(0.05)
