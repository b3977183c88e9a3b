"""How progress bars behave: as today on a terminal, throttled in a log.

On a terminal a bar redraws in place, so frequent redraws cost nothing. Written to a file (a log
file, ``nohup``, a batch scheduler's output), every redraw is appended: a bar that redraws ten times
a second grows the log by ten lines a second. This module is the one place that decides, for the
package's own tqdm bars and for Lightning's training bar:

* on a terminal (or in a notebook): tqdm's and Lightning's defaults, unchanged;
* otherwise: a bar redraws at most once every :func:`log_interval` seconds (30 by default), and a
  bar that finishes sooner than that is not shown at all; Lightning's training bar is throttled the
  same way (:class:`LogProgressBar`) and its sanity-check and in-fit validation bars are off.

``TQDM_MININTERVAL`` in the environment sets the interval (tqdm reads the same variable for its own
default on a terminal); ``TQDM_DISABLE=1`` turns tqdm's bars off altogether.

Use::

    from tqdm.auto import tqdm
    from qidbm.progress import tqdm_kwargs

    for step in tqdm(steps, desc="Gibbs sweeps", leave=False, **tqdm_kwargs()):
        ...

``qidbm fit``/``validate`` install :class:`LogProgressBar` themselves when standard output is not a
terminal (unless the config lists a progress bar callback or sets ``enable_progress_bar: false``).
This module imports neither torch nor Lightning; :class:`LogProgressBar` loads Lightning on first use.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, TextIO

__all__ = ["LOG_INTERVAL", "LogProgressBar", "is_terminal", "log_interval", "tqdm_kwargs"]  # noqa: F822 (lazy)

LOG_INTERVAL = 30.0
"""Seconds between two redraws of a bar written to a log (unless ``TQDM_MININTERVAL`` says otherwise)."""


def is_terminal(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (default: standard error, where tqdm writes) shows a bar in place: a terminal
    (``isatty()``) or a Jupyter notebook's output stream. A closed or replaced stream counts as a log."""
    stream = sys.stderr if stream is None else stream
    if stream is None:
        return False
    if type(stream).__module__.split(".")[0] == "ipykernel":  # a notebook redraws its widgets in place
        return True
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def log_interval() -> float:
    """Seconds between two redraws in a log: ``TQDM_MININTERVAL`` when set, else :data:`LOG_INTERVAL`."""
    value = os.environ.get("TQDM_MININTERVAL")
    if value is None or not value.strip():
        return LOG_INTERVAL
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(
            f"TQDM_MININTERVAL={value!r} is not a number of seconds; set it to e.g. 30 (a bar in a log "
            "redraws at most every 30 s) or unset it"
        ) from None
    if seconds < 0:
        raise ValueError(f"TQDM_MININTERVAL={value!r} is negative; set it to a number of seconds >= 0 or unset it")
    return seconds


def tqdm_kwargs(stream: TextIO | None = None, **terminal: Any) -> dict[str, Any]:
    """Keyword arguments for a ``tqdm(...)`` call under the policy of this module.

    Args:
        stream: where the bar is written (tqdm's ``file``; default standard error). Also passed on
            to tqdm when given.
        **terminal: the call's own settings (``mininterval=1.0`` ...), used as given on a terminal.

    Returns:
        ``terminal`` (plus ``file``) on a terminal; otherwise the same with ``mininterval``,
        ``maxinterval`` and ``delay`` set so that the bar redraws at most once every
        :func:`log_interval` seconds and a bar shorter than that prints nothing.
    """
    kwargs = dict(terminal)
    if stream is not None:
        kwargs["file"] = stream
    if is_terminal(stream):
        return kwargs
    seconds = log_interval()
    kwargs["mininterval"] = seconds
    # tqdm's monitor thread forces a redraw after maxinterval (default 10 s): never sooner than the interval
    kwargs["maxinterval"] = max(seconds, float(kwargs.get("maxinterval", 10.0)))
    kwargs["delay"] = seconds
    return kwargs


def _throttle(bar: Any, interval: float) -> Any:
    """Let ``bar`` (a tqdm bar that has just drawn itself) redraw at most once every ``interval``
    seconds. Lightning's progress bar sets the count and calls ``refresh()`` itself, which bypasses
    tqdm's ``mininterval``; ``close()`` draws the final state regardless."""
    if getattr(bar, "disable", True) or interval <= 0:
        return bar
    refresh = bar.refresh
    last = time.monotonic()

    def throttled_refresh(*args: Any, **kwargs: Any) -> Any:
        nonlocal last
        now = time.monotonic()
        if now - last < interval:
            return False
        last = now
        return refresh(*args, **kwargs)

    bar.refresh = throttled_refresh
    return bar


def _define_log_progress_bar() -> type:
    from lightning.pytorch.callbacks import TQDMProgressBar
    from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm

    class LogProgressBar(TQDMProgressBar):
        """Lightning's ``TQDMProgressBar`` for output that is not a terminal (a log file, ``nohup``).

        The training bar (and the bar of ``qidbm validate``) redraws at most once every ``interval``
        seconds and once more when it closes; the sanity-check bar and the validation bar inside a fit
        are off (their results are logged). ``qidbm fit`` installs it when standard output is not a
        terminal; a config may also list it (``class_path: qidbm.progress.LogProgressBar``).

        Args:
            interval: seconds between two redraws; ``None``: :func:`log_interval` (30 s, or
                ``TQDM_MININTERVAL``).
            refresh_rate, process_position, leave: as Lightning's ``TQDMProgressBar``.
        """

        def __init__(self, interval: float | None = None, refresh_rate: int = 1, process_position: int = 0,
                     leave: bool = False) -> None:
            super().__init__(refresh_rate=refresh_rate, process_position=process_position, leave=leave)
            if interval is not None and interval < 0:
                raise ValueError(f"LogProgressBar(interval={interval}): give a number of seconds >= 0")
            self.interval = log_interval() if interval is None else float(interval)

        def init_sanity_tqdm(self) -> Tqdm:
            return Tqdm(disable=True)

        def init_train_tqdm(self) -> Tqdm:
            return _throttle(super().init_train_tqdm(), self.interval)

        def init_validation_tqdm(self) -> Tqdm:
            if self.trainer.state.fn != "validate":
                return Tqdm(disable=True)
            return _throttle(super().init_validation_tqdm(), self.interval)

        def init_test_tqdm(self) -> Tqdm:
            return _throttle(super().init_test_tqdm(), self.interval)

        def init_predict_tqdm(self) -> Tqdm:
            return _throttle(super().init_predict_tqdm(), self.interval)

    LogProgressBar.__module__ = __name__
    LogProgressBar.__qualname__ = "LogProgressBar"
    return LogProgressBar


def __getattr__(name: str) -> Any:
    # LogProgressBar subclasses a Lightning class: defined on first use, so that importing this module
    # (every tqdm call site does) does not import Lightning
    if name == "LogProgressBar":
        cls = _define_log_progress_bar()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
