"""Flat training options of qidbm 0.1 (``negative_start: noise``, ``cd_steps: 20``, ...) mapped onto the
objects that :class:`qidbm.lightning.BoltzmannModule` composes today.

Checkpoints written with the flat options keep working: :func:`upgrade_hparams` turns their
hyperparameters into the current ones (the same estimators, kernel, optimizer and schedule, written
as ``{class_path, init_args}``), so they sample and resume as before. A config that still uses the
flat options is refused with :func:`legacy_config_message`, which prints the new form.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LEGACY_KEYS", "is_legacy", "legacy_config_message", "upgrade_hparams"]

LEGACY_KEYS = frozenset({
    "cd_steps", "negative_start", "num_chains", "positive", "positive_steps", "quantum_step", "visible_step",
    "langevin_steps", "langevin_step_size", "lr", "momentum", "weight_decay", "init_visible_bias",
    "persistent_update", "centering_rate", "lr_decay", "lr_cooldown_steps", "persistent_betas",
    "persistent_weight", "noise_density", "visible_variance_scale", "noise_anneal",
})
_E = "qidbm.estimators"


def _obj(path: str, **init_args: Any) -> dict:
    return {"class_path": path, "init_args": init_args}


def is_legacy(hparams: dict | None) -> bool:
    """Whether ``hparams`` use the flat options (``centering: true`` included)."""
    hp = hparams or {}
    return (any(k in hp for k in LEGACY_KEYS if k != "positive")
            or hp.get("positive") in ("gibbs", "mean_field", "local_mode") or isinstance(hp.get("centering"), bool))


def upgrade_hparams(hparams: dict | None) -> dict:
    """The current hyperparameters for flat ones (returned unchanged when they are current).

    ``negative_start``: ``data`` -> ``FromData(cd_steps)``, ``noise`` -> ``FromNoise(cd_steps,
    noise_density, noise_anneal)``, ``persistent`` -> ``Persistent(num_chains, cd_steps,
    persistent_update)`` (``TemperedPersistent(persistent_betas, ...)`` with a ladder),
    ``noise_and_persistent`` -> ``Mixture(FromNoise(...), Persistent(...), persistent_weight)``,
    ``local_mode`` -> ``TaniguchiChains()``; ``positive`` -> ``ClampedGibbs(positive_steps)``,
    ``MeanField()`` or ``ClampedLocalMode()``; ``quantum_step``/``visible_step`` -> the kernel;
    ``lr``/``momentum``/``weight_decay`` -> ``torch.optim.SGD``; ``lr_decay``/``lr_cooldown_steps`` ->
    ``LRSchedule``; ``centering``/``centering_rate`` -> ``Centering``; ``init_visible_bias`` /
    ``visible_variance_scale`` -> ``DataInit``.
    """
    hp = dict(hparams or {})
    if not is_legacy(hp):
        return hp
    g = lambda k, d: hp[k] if hp.get(k) is not None else d  # noqa: E731
    k = int(g("cd_steps", 1))
    start = g("negative_start", "persistent")
    density = hp.get("noise_density")
    noise = _obj(f"{_E}.FromNoise", sweeps=k, density=None if density is None else list(density),
                 anneal_from=float(g("noise_anneal", 1.0)))
    betas = hp.get("persistent_betas")
    if betas:
        persistent = _obj(f"{_E}.TemperedPersistent", betas=[float(b) for b in betas], num_chains=hp.get("num_chains"),
                          sweeps=k)
    else:
        persistent = _obj(f"{_E}.Persistent", num_chains=hp.get("num_chains"), sweeps=k,
                          update=g("persistent_update", "sweep"))
    negatives = {
        "data": _obj(f"{_E}.FromData", sweeps=k),
        "noise": noise,
        "persistent": persistent,
        "noise_and_persistent": _obj(f"{_E}.Mixture", fresh=noise, persistent=persistent,
                                     weight=hp.get("persistent_weight")),
        "local_mode": _obj(f"{_E}.TaniguchiChains"),
    }
    if start not in negatives:
        raise ValueError(f"negative_start {start!r} is no longer available ({'data_local_mode was removed; ' if start == 'data_local_mode' else ''}"
                         f"known: {', '.join(negatives)}); retrain with a negative estimator of qidbm.estimators")
    positives = {
        "gibbs": _obj(f"{_E}.ClampedGibbs", steps=int(g("positive_steps", 5))),
        "mean_field": _obj(f"{_E}.MeanField", steps=10),
        "local_mode": _obj(f"{_E}.ClampedLocalMode"),
    }
    visible = None
    if g("visible_step", "gibbs") == "langevin":
        visible = _obj("qidbm.samplers.visible.LangevinVisible", steps=int(g("langevin_steps", 10)),
                       step_size=float(g("langevin_step_size", 0.1)))
    kernel_class = "ExactStep" if g("quantum_step", "paper") == "exact" else "PaperStep"
    decay, cooldown = float(g("lr_decay", 0.0)), int(g("lr_cooldown_steps", 0))
    out = {key: v for key, v in hp.items() if key not in LEGACY_KEYS and key != "centering"}
    out.update(
        negative=negatives[start],
        positive=positives[g("positive", "gibbs")],
        kernel=_obj(f"qidbm.samplers.kernels.{kernel_class}", visible=visible),
        optimizer=_obj("torch.optim.SGD", lr=float(g("lr", 1e-3)), momentum=float(g("momentum", 0.0)),
                       weight_decay=float(g("weight_decay", 0.0))),
        lr_schedule=_obj("qidbm.lightning.lr_schedule.LRSchedule", decay=decay, cooldown_steps=cooldown)
        if (decay or cooldown) else None,
        centering=_obj("qidbm.lightning.centering.Centering", rate=float(g("centering_rate", 0.01)))
        if hp.get("centering") else None,
        init_visible=_obj("qidbm.lightning.data_init.DataInit", variance_scale=float(g("visible_variance_scale", 1.0)))
        if g("init_visible_bias", True) else None,
    )
    return out


def legacy_config_message(init_args: dict) -> str:
    """The error for a config whose ``model.init_args`` use flat options: what each became, and the new
    ``init_args`` to paste (YAML)."""
    import yaml

    old = {k: v for k, v in init_args.items()
           if (k in LEGACY_KEYS and k != "positive") or (k == "positive" and v in ("gibbs", "mean_field", "local_mode"))
           or (k == "centering" and isinstance(v, bool))}
    new = upgrade_hparams({k: v for k, v in init_args.items() if k != "model"})
    new = {k: v for k, v in new.items() if v is not None and not k.startswith("_")}
    return (
        "this config uses the flat training options of qidbm 0.1 (" + ", ".join(sorted(old)) + "), which are now "
        "objects: the negative and positive phases (qidbm.estimators), the kernel, the optimizer, the schedule and "
        "centering. Replace them in model.init_args by:\n" + yaml.safe_dump(new, sort_keys=False)
    )
