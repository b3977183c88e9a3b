"""Checks of command-line arguments before expensive work (``qidbm sample``, ``qidbm evaluate``):
a bad device, an unwritable output path or a sample count that cannot fit in memory is reported
before any checkpoint is loaded or any chain runs."""

from __future__ import annotations

import os
from pathlib import Path


def available_memory_bytes() -> int | None:
    """Memory this process can still take (``MemAvailable``, capped by a cgroup limit), or None if unknown."""
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        avail = None
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
        if limit != "max":
            free = int(limit) - used
            avail = free if avail is None else min(avail, free)
    except (OSError, ValueError):
        pass
    return avail


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB"


def check_sample_memory(num_samples: int, n_visible: int, device, option: str = "--num-samples",
                        copies: int = 3, bytes_per_value: int = 4) -> None:
    """``MemoryError`` (with the numbers and the fix) when ``num_samples`` samples of ``n_visible``
    float32 values (``copies`` live copies: the batches, their concatenation and the images) cannot fit."""
    import torch

    need = num_samples * n_visible * bytes_per_value * copies
    dev = torch.device(device)
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        have, where = free, f"free on {dev}"
    else:
        have, where = available_memory_bytes(), "available"
    if have is not None and need > have:
        fit = max(int(have // (n_visible * bytes_per_value * copies)), 0)
        raise MemoryError(
            f"{option} {num_samples} needs about {_gb(need)} of memory ({num_samples} samples x {n_visible} values x "
            f"{bytes_per_value} bytes x {copies} copies) but {_gb(have)} is {where}: nothing was sampled. Draw at most "
            f"about {fit} samples per call (several calls with different --seed give more)"
        )


def output_path_problem(path, *, folder: bool) -> str | None:
    """Why ``path`` cannot be written (a file to write, or a folder to create when ``folder``), or None."""
    p = Path(path).expanduser()
    if p.exists():
        if folder and not p.is_dir():
            return f"{p} is a file, not a folder"
        if not folder and p.is_dir():
            return f"{p} is a folder; give a file name"
        if not os.access(p, os.W_OK):
            return f"{p} is not writable (permission denied)"
        return None
    anc = p.parent
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        return f"cannot create {p}: {anc} is a file, not a folder"
    if not os.access(anc, os.W_OK | os.X_OK):
        return f"cannot create {p}: {anc} is not writable (permission denied)"
    return None


def unnamed_output_problem(named, companion) -> str | None:
    """Why writing ``companion`` beside the output file the user ``named`` would replace a file of someone
    else's, or None.

    ``qidbm sample --out grid.png`` also writes ``grid.npy``. An existing ``grid.npy`` is replaced only
    when ``grid.png`` exists too: the two are then the set an earlier ``qidbm sample`` wrote (and the
    user named its grid again). A ``grid.npy`` alone belongs to someone else and is never replaced."""
    named, companion = Path(named).expanduser(), Path(companion).expanduser()
    if companion.exists() and not named.exists():
        return (f"{companion} already exists and the array of the samples would replace it (qidbm sample writes "
                f"it beside {named.name}); it is not part of an earlier `qidbm sample` output ({named} does not "
                "exist). Move it away, or choose another --out name")
    return None


def check_device_arg(device: str) -> str | None:
    """The error message for an unusable ``--device``, or None."""
    from qidbm.checkpoint import check_device

    try:
        check_device(device)
    except ValueError as e:
        return f"--device: {e}"
    return None
