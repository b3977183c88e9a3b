"""What a :class:`~qidbm.lightning.BoltzmannModule` keeps in a checkpoint beside Lightning's state: the
``qidbm`` section (model class and configuration, data info, the negative estimator's persistent
chains and the chains' generator per DDP rank, optimizer settings, centering offsets), and how a
resume restores it."""

from __future__ import annotations

import os

import torch

from qidbm.checkpoint import check_checkpoint, checkpoint_section

__all__ = ["restore_state", "save_state", "upgraded_checkpoint"]


def upgraded_checkpoint(path):
    """``path``, or for a checkpoint of the flat options of qidbm 0.1 an in-memory copy whose
    hyperparameters are the current ones (:func:`qidbm.legacy.upgrade_hparams`): Lightning builds the
    module from them before any hook of the module runs."""
    import io

    from qidbm.checkpoint import read_checkpoint
    from qidbm.legacy import is_legacy, upgrade_hparams

    if not isinstance(path, (str, os.PathLike)):
        return path
    ckpt = read_checkpoint(path, map_location="cpu")
    if not isinstance(ckpt, dict) or not is_legacy(ckpt.get("hyper_parameters")):
        return path
    ckpt["hyper_parameters"] = upgrade_hparams(ckpt["hyper_parameters"])
    buffer = io.BytesIO()
    torch.save(ckpt, buffer)
    buffer.seek(0)
    return buffer


def save_state(module, checkpoint: dict) -> None:
    """Write ``checkpoint["qidbm"]`` for ``module`` (every rank's chains gathered under DDP)."""
    chains = module.negative.chains
    gen = module._generator
    mine = (None if chains is None else [c.detach().cpu() for c in chains], None if gen is None else gen.get_state())
    per_rank = [mine]
    trainer = module.trainer
    if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        per_rank = [None] * trainer.world_size
        torch.distributed.all_gather_object(per_rank, mine)
    centering = module.centering
    offsets = None if centering is None or centering.offsets is None else [o.detach().cpu() for o in centering.offsets]
    checkpoint["qidbm"] = checkpoint_section(
        model=module.model, data_info=module.data_info, chains_per_rank=[c for c, _ in per_rank],
        generator_state_per_rank=[g for _, g in per_rank], optimizer_settings=module._optimizer_settings,
        centering_offsets=offsets)


def restore_state(module, checkpoint: dict) -> None:
    """Check a checkpoint against ``module`` (model and data, before Lightning loads the weights) and
    restore its chains, generator state, data info and centering offsets. Inside a fit, the
    checkpoint's settings are kept for :func:`~qidbm.lightning.resume_checks.apply_changed_settings_on_resume`."""
    from qidbm.legacy import upgrade_hparams
    from qidbm.lightning.resume_checks import check_resume_matches

    info = check_checkpoint(checkpoint, expected_class=type(module.model).__name__)
    check_resume_matches(info, module.model, module.data_info)
    attached = module._trainer is not None
    module._resume = None if not attached else {
        "hyper_parameters": upgrade_hparams(checkpoint.get("hyper_parameters")),
        "optimizer_settings": info.get("optimizer_settings"), "global_step": checkpoint.get("global_step"),
        "default_optimizer": "configure_optimizers" not in module.__dict__}  # LightningCLI's optimizer: patches it
    module.data_info = info.get("data_info")
    rank, world = (module.global_rank, module.trainer.world_size) if attached else (0, 1)
    chains, gens = info.get("chains_per_rank") or [None], info.get("generator_state_per_rank") or [None]
    if len(chains) > 1 and len(chains) != world:
        raise ValueError(f"this checkpoint holds persistent chains for {len(chains)} DDP ranks but the job has "
                         f"{world}; resume with the same number of devices")
    mine = chains[min(rank, len(chains) - 1)]
    try:
        module.negative.chains = mine
    except ValueError:
        # chains of another estimator: a resume that changes the negative phase starts it afresh, unless a
        # NextStage switches to the checkpoint's estimator again (it takes them from here)
        module._pending_chains = mine
    module._generator, module._restored_generator_state = None, gens[min(rank, len(gens) - 1)]
    if module.centering is not None:
        module.centering.offsets = info.get("centering_offsets")
