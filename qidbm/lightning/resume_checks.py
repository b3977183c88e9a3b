"""Resume checks: a checkpoint's model and data against this run's, and the settings a resume changes.

:func:`check_resume_matches` (other layer sizes or other data are errors, before any weight is loaded),
:func:`optimizer_settings` (recorded at the start of a fit) and :func:`apply_changed_settings_on_resume`
(a changed learning rate, momentum, ... is applied and reported).
"""

from __future__ import annotations

import json
from typing import Any

import lightning as L
from torch import Tensor

__all__ = ["apply_changed_settings_on_resume", "check_resume_matches", "optimizer_settings"]


def _plain(x: Any) -> Any:
    """JSON-like copy (tuples become lists) so that configs compare by value."""
    try:
        return json.loads(json.dumps(x))
    except (TypeError, ValueError):
        return x


def _canonical(x: Any) -> Any:
    """:func:`_plain`, with every ``init_args`` entry that equals its class's default dropped, so that a
    checkpoint written before an argument existed compares equal to a run that leaves it at its default."""
    import importlib
    import inspect

    x = _plain(x)
    if isinstance(x, list):
        return [_canonical(v) for v in x]
    if not isinstance(x, dict):
        return x
    out = {k: _canonical(v) for k, v in x.items()}
    path, args = out.get("class_path"), out.get("init_args")
    if isinstance(path, str) and path.startswith(("qidbm.", "torch.optim.")) and isinstance(args, dict):
        try:
            module, _, name = path.rpartition(".")
            params = inspect.signature(getattr(importlib.import_module(module), name)).parameters
        except (ImportError, AttributeError, TypeError, ValueError):
            return out
        out["init_args"] = {k: v for k, v in args.items()
                            if not (k in params and params[k].default is not inspect.Parameter.empty
                                    and _plain(params[k].default) == v)}
    return out


# model settings that only set the initial values, which a resume replaces by the checkpoint's
_INIT_ONLY_MODEL_KEYS = frozenset({"weight_std", "transverse_field_init"})


def check_resume_matches(info: dict, model, data_info: dict | None) -> None:
    """A checkpoint's model and data against this run's, before Lightning loads the weights.

    Other layer sizes, quantum layers or field coupling: ``ValueError`` naming each difference
    (instead of torch's ``size mismatch`` from ``load_state_dict``). Other data (data set, encoding,
    image shape, preprocessing): ``ValueError`` too, since ``qidbm sample``/``evaluate`` read the
    checkpoint's data info and a resume would silently train on something else. Lightning looks a data
    module's state up by its class name, so ``ImageDataModule.load_state_dict`` never sees a checkpoint
    of another data module class: this check does not depend on it.
    """
    saved, now = _plain(info.get("model_config") or {}), _plain(model.config())
    diffs = [k for k in saved if k in now and k not in _INIT_ONLY_MODEL_KEYS and saved[k] != now[k]]
    if diffs:
        what = "; ".join(f"{k}: {saved[k]} in the checkpoint, {now[k]} in this run" for k in diffs)
        raise ValueError(
            f"this checkpoint's {info.get('model_class')} does not match this run's model ({what}). Resume with the "
            f"checkpoint's model settings (model.init_args.model.init_args.{diffs[0]}: {saved[diffs[0]]}), or start a "
            "new run without --ckpt_path"
        )
    saved_d = info.get("data_info")
    if not saved_d or not data_info:
        return
    diffs = []
    for k in ("dataset", "encoding", "image_shape", "n_visible", "preprocessing"):
        a, b = _plain(saved_d.get(k)), _plain(data_info.get(k))
        if a != b and not (a is None and k == "preprocessing"):
            diffs.append(f"{k}: {a} in the checkpoint, {b} in this run")
    kind_a = (saved_d.get("normalization") or {}).get("kind")
    kind_b = (data_info.get("normalization") or {}).get("kind")
    if kind_a != kind_b:
        diffs.append(f"normalization: {kind_a} in the checkpoint, {kind_b} in this run")
    if diffs:
        module = (saved_d.get("datamodule") or {}).get("class_path", saved_d.get("dataset"))
        raise ValueError(
            f"this checkpoint was trained on other data ({'; '.join(diffs)}). Resuming would train on the new data "
            "while the checkpoint's data info (used by `qidbm sample` and `qidbm evaluate`) keeps the old. Resume "
            f"with the checkpoint's data settings (data: class_path {module}, encoding {saved_d.get('encoding')}), "
            "or start a new run without --ckpt_path"
        )


_OPTIMIZER_KEYS = ("lr", "momentum", "dampening", "weight_decay", "nesterov", "betas", "eps", "alpha", "rho",
                   "amsgrad", "centered", "lr_decay", "initial_accumulator_value", "maximize")


def optimizer_settings(optimizers) -> list[list[dict[str, Any]]]:
    """The plain settings (lr, momentum, weight_decay, betas, ...) of every parameter group."""
    out = []
    for opt in optimizers or []:
        groups = []
        for g in getattr(opt, "param_groups", []):
            d: dict[str, Any] = {}
            for k in _OPTIMIZER_KEYS:
                v = g.get(k)
                if isinstance(v, Tensor) and v.numel() == 1:
                    v = float(v)
                if isinstance(v, tuple):
                    v = list(v)
                if isinstance(v, (bool, int, float)) or (
                        isinstance(v, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)):
                    d[k] = v
            groups.append(d)
        out.append(groups)
    return out


# module settings that a resume cannot change, and why
_RESUME_NOTES = {
    "chain_seed": "not used: the sampling generator continues from the checkpoint's state",
    "init_visible": "not used: the parameters come from the checkpoint",
    "negative": "applied: persistent chains of another number or estimator are drawn afresh",
}


def apply_changed_settings_on_resume(trainer: L.Trainer, resume: dict, hparams: dict,
                                     configured: list | None, defaults: dict | None = None) -> list[str]:
    """After Lightning restored a checkpoint's optimizer state: apply the settings this run changed.

    ``torch.optim.Optimizer.load_state_dict`` restores the checkpoint's learning rate (and momentum,
    weight decay, ...), so ``--model.init_args.lr 0.001 --ckpt_path last`` would train at the old rate
    while ``config.yaml`` records the new one. Every optimizer setting that differs between the
    checkpoint's configuration (``optimizer_settings``, recorded at the start of its fit) and this run's
    is set to this run's value; a learning rate that a scheduler or ``FaultGuard`` had already scaled
    keeps that factor (and a scheduler's ``base_lrs`` follow). Other module settings (``cd_steps``, ...)
    are read every step and apply anyway. A setting the checkpoint predates (absent from its
    hyperparameters) is listed when this run sets it away from its ``defaults`` value. A warning lists
    every change. Returns the listed changes.
    """
    lines: list[str] = []
    saved = resume.get("optimizer_settings")
    old_hp = resume.get("hyper_parameters") or {}
    if saved is None and resume.get("default_optimizer"):
        # a checkpoint from before optimizer settings were recorded: the module's own SGD settings
        saved = [[{k: old_hp[k] for k in ("lr", "momentum", "weight_decay") if k in old_hp} for _ in opt.param_groups]
                 for opt in trainer.optimizers]
    opts = list(trainer.optimizers)
    if saved is not None and configured is not None and len(saved) == len(configured) == len(opts):
        single = len(opts) == 1 and len(opts[0].param_groups) == 1
        for i, (opt, old_groups, new_groups) in enumerate(zip(opts, saved, configured)):
            if not (len(old_groups) == len(new_groups) == len(opt.param_groups)):
                continue
            for j, (group, old, new) in enumerate(zip(opt.param_groups, old_groups, new_groups)):
                for k in [k for k in new if k in old and old[k] != new[k]]:
                    where = "" if single else f" (optimizer {i}, group {j})"
                    note = ""
                    if k == "lr":
                        restored = group["lr"]
                        if restored == old[k] or not old[k]:
                            group["lr"] = new[k]
                        else:  # a scheduler or a FaultGuard restore scaled it: keep that factor
                            group["lr"] = restored * new[k] / old[k]
                            note = f" (the restored rate {restored:g} is scaled alike, to {group['lr']:g})"
                        if "initial_lr" in group:
                            group["initial_lr"] = new[k]
                        for cfg in getattr(trainer, "lr_scheduler_configs", []) or []:
                            sch = cfg.scheduler
                            if getattr(sch, "optimizer", None) is opt and isinstance(getattr(sch, "base_lrs", None), list):
                                sch.base_lrs[j] = new[k]
                    else:
                        group[k] = tuple(new[k]) if isinstance(group.get(k), tuple) else new[k]
                    lines.append(f"{k}{where} {old[k]} -> {new[k]} (applied{note})")
    for k in sorted(set(old_hp) & set(hparams)):
        if k.startswith("_") or k in ("optimizer", "lr", "momentum", "weight_decay") or _canonical(old_hp[k]) == _canonical(hparams[k]):
            continue  # the optimizer's settings are compared above (the CLI's optimizer: section sets them there)
        lines.append(f"{k} {old_hp[k]!r} -> {hparams[k]!r} ({_RESUME_NOTES.get(k, 'applied')})")
    for k in sorted(set(hparams) - set(old_hp)) if old_hp and defaults else []:
        if not k.startswith("_") and k in defaults and _plain(hparams[k]) != _plain(defaults[k]):
            lines.append(f"{k} (not in the checkpoint, which predates it; default {defaults[k]!r}) -> {hparams[k]!r} "
                         f"({_RESUME_NOTES.get(k, 'applied')})")
    if lines:
        from lightning.pytorch.utilities import rank_zero_warn

        rank_zero_warn(
            f"resuming from global step {resume.get('global_step')} with settings that differ from the checkpoint's: "
            + "; ".join(lines) + ". To keep the checkpoint's value of a setting, pass that value again (in the "
            "config or on the command line)"
        )
    return lines
