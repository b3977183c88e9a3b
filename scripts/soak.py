"""Soak test: `qidbm fit` of the quickstart model for ~30 minutes with one SIGKILL and a resume.

What it does:

1. writes a config derived from ``configs/quickstart.yaml`` (same model, data, optimizer) with
   ``max_epochs`` large, a ``ModelCheckpoint(save_last=True, every_n_train_steps=N)`` whose N is
   chosen from a measured update time (the quickstart's module and data, ``module.fit_step``:
   bench/harness.py) to checkpoint every ``--ckpt-minutes`` minutes, a CSV logger
   logging the loss every 20 steps and the :class:`WallClock` callback below (seconds since the soak
   started, so the loss can be drawn against time);
2. starts ``qidbm fit`` as a subprocess, samples its resident memory (``VmRSS`` from
   ``/proc/PID/status``; psutil is not needed) every ``--rss-every`` seconds;
3. at ``--kill-at`` minutes sends SIGKILL (mid-epoch: no clean shutdown, no final checkpoint);
4. resumes with ``--ckpt_path last`` and ``--trainer.max_time`` set so the whole soak lasts
   ``--minutes`` minutes of wall time, then lets it finish cleanly;
5. writes ``bench/results/soak.json`` (RSS samples, loss curve, steps, checkpoint steps, resume
   step, losses before/after the resume), ``bench/results/soak.png`` (loss and RSS vs time) and
   ``bench/results/soak.md`` (figures, command, date, commit, hardware).

Run (one thread, the real MNIST files)::

    OMP_NUM_THREADS=1 QIDBM_DATA_DIR=/path/to/data nohup python scripts/soak.py --minutes 30 &

``python scripts/soak.py --minutes 2 --kill-at 1 --ckpt-minutes 0.3`` is a quick smoke run.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))  # bench/harness.py, imported where used: the fit process imports this file too


class WallClock(L.Callback):
    """Logs ``wall_time``: seconds since ``$SOAK_T0`` (the soak's start), every logged step."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        t0 = float(os.environ.get("SOAK_T0", "0"))
        pl_module.log("wall_time", time.time() - t0, batch_size=1)


def rss_kib(pid: int) -> int | None:
    """Resident set size of a process in KiB (``VmRSS`` in ``/proc/PID/status``)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


def make_config(run: Path, every_n_steps: int) -> Path:
    import yaml

    cfg = yaml.safe_load((REPO / "configs" / "quickstart.yaml").read_text())
    tr = cfg["trainer"]
    tr.update(max_epochs=1000, default_root_dir=str(run), log_every_n_steps=20, enable_progress_bar=False)
    tr["logger"] = [{"class_path": "lightning.pytorch.loggers.CSVLogger",
                     "init_args": {"save_dir": str(run), "name": "logs"}}]
    tr["callbacks"] = [
        {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
         "init_args": {"dirpath": str(run / "checkpoints"), "save_last": True, "save_top_k": 0,
                       "every_n_train_steps": every_n_steps}},
        {"class_path": "qidbm.lightning.SampleGrid",
         "init_args": {"dirpath": str(run / "samples"), "num_samples": 100, "num_steps": 200, "output": "mean"}},
        {"class_path": "soak.WallClock"},
    ]
    p = run / "soak.yaml"
    p.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return p


def read_metrics(run: Path) -> list[dict]:
    rows = []
    for f in sorted((run / "logs").glob("version_*/metrics.csv")):
        with f.open() as fh:
            for r in csv.DictReader(fh):
                if r.get("train/loss") and r.get("wall_time"):
                    rows.append({"step": int(r["step"]), "time_s": float(r["wall_time"]),
                                 "loss": float(r["train/loss"]), "version": f.parent.name})
    rows.sort(key=lambda r: (r["time_s"]))
    return rows


def run_phase(cmd: list[str], env: dict, log: Path, t0: float, rss: list, kill_at: float | None, every: float,
              phase: str) -> tuple[int, float]:
    with log.open("a") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO)
        while True:
            rc = proc.poll()
            now = time.time() - t0
            if rc is not None:
                return rc, now
            r = rss_kib(proc.pid)
            if r is not None:
                rss.append({"time_s": round(now, 1), "rss_mib": round(r / 1024, 1), "phase": phase})
            if kill_at is not None and now >= kill_at:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return -9, time.time() - t0
            time.sleep(every)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0, help="total wall time of the soak")
    ap.add_argument("--kill-at", type=float, default=None, help="SIGKILL after this many minutes (default: half)")
    ap.add_argument("--ckpt-minutes", type=float, default=3.0, help="checkpoint about every this many minutes")
    ap.add_argument("--step-seconds", type=float, default=None, help="seconds per step (default: measure it)")
    ap.add_argument("--rss-every", type=float, default=5.0, help="RSS sampling period, seconds")
    ap.add_argument("--run-dir", default="/tmp/qidbm_soak", help="where the run writes (not the repo)")
    ap.add_argument("--out", default=str(REPO / "bench" / "results"), help="results folder")
    ap.add_argument("--reanalyse", action="store_true", help="only redo summary/plot/markdown from soak.json")
    a = ap.parse_args()
    if a.reanalyse:
        reanalyse(Path(a.out))
        return 0
    kill_at = 60 * (a.kill_at if a.kill_at is not None else a.minutes / 2)
    run = Path(a.run_dir)
    if run.exists():
        import shutil

        shutil.rmtree(run)
    run.mkdir(parents=True)
    import torch

    from harness import header

    h = header(__file__)  # at the start: the load average before the soak
    t_measure = time.time()
    step_s = a.step_seconds or measure_step_seconds()
    every_n = max(10, int(round(60 * a.ckpt_minutes / step_s)))
    cfg = make_config(run, every_n)
    env = dict(os.environ)
    t0 = time.time()
    env["SOAK_T0"] = repr(t0)
    # scripts/ for soak.WallClock in the fit's config, bench/ for the harness
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "scripts"), str(REPO / "bench"), env.get("PYTHONPATH", "")])
    env.setdefault("OMP_NUM_THREADS", "1")
    qidbm = [sys.executable, "-m", "qidbm.cli"]
    base = qidbm + ["fit", "--config", str(cfg)]
    log = run / "fit.log"
    rss: list[dict] = []
    print(f"step {step_s * 1000:.1f} ms (measured in {time.time() - t_measure:.0f} s); checkpoint every {every_n} steps; "
          f"SIGKILL at {kill_at / 60:.1f} min; run dir {run}", flush=True)
    rc1, t_kill = run_phase(base, env, log, t0, rss, kill_at, a.rss_every, "before kill")
    ckpt = run / "checkpoints" / "last.ckpt"
    if rc1 != -9:
        print(f"first phase ended by itself (rc {rc1}) before the kill; see {log}", file=sys.stderr)
        return 1
    resumed_from = torch.load(ckpt, map_location="cpu", weights_only=True)
    resume_step, resume_epoch = int(resumed_from["global_step"]), int(resumed_from["epoch"])
    del resumed_from
    # the first phase has no max_time, so its checkpoints hold no Timer state and the resumed
    # run's max_time counts from the resume: give it what remains of the wall-time budget
    max_time = int(max(60.0, 60 * a.minutes - (time.time() - t0)))
    resume_cmd = base + ["--ckpt_path", "last", "--trainer.max_time",
                         f"00:{max_time // 3600:02d}:{max_time % 3600 // 60:02d}:{max_time % 60:02d}"]
    rc2, t_end = run_phase(resume_cmd, env, log, t0, rss, None, a.rss_every, "after resume")
    metrics = read_metrics(run)
    pre = [m for m in metrics if m["version"] == "version_0"]
    post = [m for m in metrics if m["version"] != "version_0"]
    pre_before_ckpt = [m for m in pre if m["step"] < resume_step]
    final = torch.load(ckpt, map_location="cpu", weights_only=True)
    steps_total, epochs_total = int(final["global_step"]), int(final["epoch"])
    lost_steps = max(m["step"] for m in pre) - resume_step if pre else None

    def mean_loss(rows):
        return sum(r["loss"] for r in rows) / len(rows) if rows else None

    h["load_end"] = os.getloadavg()[0]
    hw = f"{h['cpu']} ({h['cores']} cores{', ' + h['gpu'] if h['gpu'] else ''}), OMP_NUM_THREADS={env['OMP_NUM_THREADS']}"
    res = {
        "header": h, "command": h["command"],
        "fit_command": " ".join(base[2:]).replace(str(run), "$RUN"),
        "resume_command": " ".join(resume_cmd[2:]).replace(str(run), "$RUN"),
        "hardware": hw, "torch": torch.__version__, "lightning": L.__version__,
        "minutes": a.minutes, "wall_s": round(t_end, 1), "step_seconds_measured": step_s,
        "checkpoint_every_n_steps": every_n, "kill_time_s": round(t_kill, 1), "kill_rc": rc1, "resume_rc": rc2,
        "resumes": 1, "resume_from_step": resume_step, "resume_from_epoch": resume_epoch,
        "steps_done_before_kill_last_logged": max(m["step"] for m in pre) if pre else None,
        "steps_lost_to_kill_at_most": lost_steps,
        "final_global_step": steps_total, "final_epoch": epochs_total,
        # "start": the first sample a minute into training (the first samples catch the interpreter
        # starting up, before the data and model are loaded)
        "rss_mib_start": next((r["rss_mib"] for r in rss if r["time_s"] >= 60), None),
        "rss_mib_first_sample": rss[0]["rss_mib"] if rss else None,
        "rss_mib_max": max(r["rss_mib"] for r in rss) if rss else None,
        "rss_mib_end": rss[-1]["rss_mib"] if rss else None,
        "loss_last_logged_before_kill": pre_before_ckpt[-1]["loss"] if pre_before_ckpt else None,
        "loss_first_logged_after_resume": post[0]["loss"] if post else None,
        "loss_mean_last5_before_resume_step": mean_loss(pre_before_ckpt[-5:]),
        "loss_mean_first5_after_resume": mean_loss(post[:5]),
        "rss": rss, "loss": metrics,
    }
    # RSS flatness: compare the median of the first and last 10 % of each phase's samples after warm-up
    for phase in ("before kill", "after resume"):
        s = [r["rss_mib"] for r in rss if r["phase"] == phase]
        if len(s) >= 20:
            k = max(2, len(s) // 10)
            warm = s[k:]
            res[f"rss_mib_{phase.replace(' ', '_')}"] = {
                "first_after_warmup": sorted(warm[:k])[k // 2], "last": sorted(warm[-k:])[k // 2],
                "max": max(s), "min_after_warmup": min(warm)}
    res.update(replay_stats(res))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "soak.json").write_text(json.dumps(res, indent=1))
    plot(res, out / "soak.png")
    write_md(res, out / "soak.md")
    print(json.dumps({k: v for k, v in res.items() if k not in ("rss", "loss")}, indent=1))
    return 0 if rc2 == 0 else 1


def replay_stats(res: dict) -> dict:
    """Compare the losses of the steps that both the killed run and the resumed run trained.

    The resumed run replays the steps between the checkpoint and the kill; with the same chains,
    generator, optimizer state and batches its loss at those steps equals the killed run's until
    float rounding (MKL kernels are not bitwise reproducible across processes unless
    ``MKL_CBWR=COMPATIBLE``) flips a sampled unit and the chains part ways.
    """
    pre = {m["step"]: m["loss"] for m in res["loss"] if m["version"] == "version_0"}
    post = {m["step"]: m["loss"] for m in res["loss"] if m["version"] != "version_0"}
    common = sorted(set(pre) & set(post))
    first_diff = next((s for s in common if pre[s] != post[s]), None)
    first10 = common[:10]
    return {
        "replayed_logged_steps": len(common),
        "replayed_steps_equal_loss": sum(pre[s] == post[s] for s in common),
        "replay_first_step_with_different_loss": first_diff,
        "replay_max_abs_loss_diff_first10": max((abs(pre[s] - post[s]) for s in first10), default=None),
        "replay_pairs_first10": [[s, pre[s], post[s]] for s in first10],
        "last_logged_step": max(post) if post else None,
    }


def reanalyse(out: Path) -> None:
    """Recompute the summary, plot and markdown from an existing soak.json (no new run)."""
    res = json.loads((out / "soak.json").read_text())
    res.update(replay_stats(res))
    (out / "soak.json").write_text(json.dumps(res, indent=1))
    plot(res, out / "soak.png")
    write_md(res, out / "soak.md")


def measure_step_seconds(n: int = 30) -> float:
    """Seconds per update of the quickstart run: its module and MNIST batches built from
    ``configs/quickstart.yaml``, ``n`` updates timed after 5, plus ~15 % for logging and data loading."""
    from harness import batches_of, from_configs, start_fit, time_updates

    module, dm = from_configs(["configs/quickstart.yaml"], "--data.init_args.download", "false")
    batches = batches_of(dm, 5)
    return time_updates(start_fit(module, batches), batches, n, warmup=5).median * 1.15


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True)
    for v, c in (("version_0", "tab:blue"), ("version_1", "tab:orange")):
        rows = [r for r in res["loss"] if r["version"] == v]
        if rows:
            ax1.plot([r["time_s"] / 60 for r in rows], [r["loss"] for r in rows], ".", ms=2, color=c,
                     label="before SIGKILL" if v == "version_0" else f"resumed from step {res['resume_from_step']}")
    ax1.set_ylabel("train/loss (F_data - F_model)")
    ax1.legend(loc="upper right")
    for phase, c in (("before kill", "tab:blue"), ("after resume", "tab:orange")):
        rows = [r for r in res["rss"] if r["phase"] == phase]
        ax2.plot([r["time_s"] / 60 for r in rows], [r["rss_mib"] for r in rows], "-", color=c, label=phase)
    for ax in (ax1, ax2):
        ax.axvline(res["kill_time_s"] / 60, color="red", ls="--", lw=1)
    ax2.set_ylabel("RSS of the fit process (MiB)")
    ax2.set_xlabel("minutes since start (red: SIGKILL)")
    ax2.legend(loc="lower right")
    fig.suptitle(f"qidbm soak: quickstart QiDBM 784-500-200, {res['hardware']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_md(res: dict, path: Path) -> None:
    f = lambda x: "n/a" if x is None else (f"{x:.4f}" if isinstance(x, float) else str(x))  # noqa: E731
    from harness import header_lines

    stated = header_lines(res["header"]) if "header" in res else [f"Command: `{res['command']}`  ", f"Hardware: {res['hardware']}  "]
    lines = [
        f"# Soak run: {res['minutes']:g} minutes of `qidbm fit`, one SIGKILL, one resume",
        "",
        *stated,
        f"lightning {res['lightning']}.  ",
        f"Fit: `python -m {res['fit_command']}` (quickstart model and data; checkpoint every "
        f"{res['checkpoint_every_n_steps']} steps).  ",
        f"Resume: `python -m {res['resume_command']}`.",
        "",
        "| figure | value |", "| --- | --- |",
        f"| wall time | {res['wall_s'] / 60:.1f} min |",
        f"| SIGKILL at | {res['kill_time_s'] / 60:.1f} min (exit status {res['kill_rc']}) |",
        f"| resumes | {res['resumes']} (from `last.ckpt` at global step {res['resume_from_step']}, epoch {res['resume_from_epoch']}) |",
        f"| steps lost to the kill (last logged step before the kill minus resume step) | {f(res['steps_lost_to_kill_at_most'])} |",
        f"| last logged step (max_time stop) / step of the final last.ckpt | {f(res.get('last_logged_step'))} / "
        f"{res['final_global_step']} (epoch {res['final_epoch']}) |",
        f"| resumed run's exit status | {res['resume_rc']} |",
        f"| RSS at start (1 min in) / end / max | {res['rss_mib_start']:.1f} / {res['rss_mib_end']:.1f} / "
        f"{res['rss_mib_max']:.1f} MiB |",
    ]
    for phase in ("before_kill", "after_resume"):
        d = res.get(f"rss_mib_{phase}")
        if d:
            lines.append(f"| RSS {phase.replace('_', ' ')}: after warm-up first / last / max | "
                         f"{d['first_after_warmup']} / {d['last']} / {d['max']} MiB |")
    lines += [
        f"| loss, last logged before the resume step | {f(res['loss_last_logged_before_kill'])} |",
        f"| loss, first logged after the resume | {f(res['loss_first_logged_after_resume'])} |",
        f"| loss, mean of 5 logged before / 5 after the resume | {f(res['loss_mean_last5_before_resume_step'])} / "
        f"{f(res['loss_mean_first5_after_resume'])} |",
        f"| steps replayed after the resume (logged every 20) / with the killed run's loss exactly | "
        f"{f(res.get('replayed_logged_steps'))} / {f(res.get('replayed_steps_equal_loss'))} |",
        f"| first replayed step whose loss differs (float rounding across processes) | "
        f"{f(res.get('replay_first_step_with_different_loss'))} |",
        "",
        "The resumed run trains again the steps between the checkpoint and the kill. With the restored "
        "chains, generator, optimizer state and batch position (MidEpochResume) its loss at those steps "
        "equals the killed run's; the first pairs (step, killed run, resumed run): "
        + ", ".join(f"({s}, {x:.4f}, {y:.4f})" for s, x, y in res.get("replay_pairs_first10", [])[:5])
        + ". They part ways once a float rounding difference flips a sampled unit: MKL kernels are not "
        "bitwise reproducible across processes unless `MKL_CBWR=COMPATIBLE` is set (the exact resume test "
        "sets it and gets bitwise equality).",
        "",
        "![loss and RSS vs time](results/soak.png)",
        "",
        "Raw numbers: `bench/results/soak.json` (RSS every few seconds from `/proc/PID/status` VmRSS, "
        "the logged loss with its step and wall time).",
    ]
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
