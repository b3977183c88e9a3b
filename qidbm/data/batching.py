"""Whole-batch serving from an in-memory tensor, with DDP sharding.

The training sets are small enough to hold as one uint8 tensor (MNIST: 60000 x 784 bytes).
A batch is one fancy-indexing gather plus one vectorised encode, with no per-sample
``__getitem__`` and no collation::

    ds = TensorBatchDataset(pixels, encoder)          # ds[[i1, ..., iB]] -> [B, n_visible]
    sampler = IndexBatchSampler(len(ds), batch_size=600, shuffle=True, drop_last=True, seed=0)
    loader = DataLoader(ds, batch_size=None, sampler=sampler)

:class:`IndexBatchSampler` yields lists of indices (one list per batch) and shards them
across DDP ranks itself, so it subclasses ``DistributedSampler`` only so that Lightning's
``use_distributed_sampler`` recognises it as already distributed and leaves it alone.

Mid-epoch resume: :class:`ResumableDataLoader` has ``state_dict``/``load_state_dict`` (Lightning's
``_Stateful``), so Lightning's fit loop saves its position (epoch and batches handed out) in every
checkpoint and gives it back on a resume; :meth:`IndexBatchSampler.load_state_dict` then starts the
next iteration at that batch of that epoch's permutation.
"""

from __future__ import annotations

import math
from typing import Iterator

import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from .encodings import Encoder, binarization_seed, stochastic_binarize

__all__ = ["IndexBatch", "IndexBatchSampler", "ResumableDataLoader", "StochasticBinaryBatchDataset", "TensorBatchDataset"]


class IndexBatch(list):
    """One batch of dataset indices (a ``list``) that also carries the sampler's ``epoch``, so a
    dataset can vary its items by epoch (:class:`StochasticBinaryBatchDataset`), also in worker processes."""

    def __init__(self, indices=(), epoch: int = 0):
        super().__init__(indices)
        self.epoch = int(epoch)


class TensorBatchDataset(Dataset):
    """Dataset over 8-bit images held in memory; indexing with a list of indices returns the
    encoded batch ``encoder.encode_uint8(pixels[indices])`` as float32 [B, n_visible].

    An integer index returns one encoded row [n_visible] (for inspection; the loaders always
    ask for whole batches). Labels are not kept.
    """

    def __init__(self, pixels: Tensor, encoder: Encoder):
        if pixels.dtype != torch.uint8 or pixels.ndim != 4:
            raise ValueError(f"pixels must be uint8 [N, C, H, W], got {pixels.dtype} {list(pixels.shape)}")
        self.pixels = pixels.contiguous()
        self.encoder = encoder

    def __len__(self) -> int:
        return self.pixels.shape[0]

    def __getitem__(self, index: int | list[int] | Tensor) -> Tensor:
        if isinstance(index, int):
            return self.encoder.encode_uint8(self.pixels[index : index + 1])[0]
        idx = torch.as_tensor(index, dtype=torch.long)
        return self.encoder.encode_uint8(self.pixels[idx])


class StochasticBinaryBatchDataset(TensorBatchDataset):
    """8-bit training images stochastically binarised afresh every epoch.

    Epoch e's images are ``stochastic_binarize(pixels, binarization_seed(seed, "train", e))``
    (:mod:`qidbm.data.encodings`): each pixel is 1 with probability its intensity, drawn anew
    each epoch as Salakhutdinov and Hinton's DBM code redraws every training batch it uses.
    The draw depends on the epoch and the image's index only (not on the batch, the rank or a
    resume), so an interrupted run that resumes sees the same bits. The epoch comes with each
    :class:`IndexBatch`; a plain list of indices is epoch 0. Epoch e's images are drawn whole,
    once, when its first batch is asked for.
    """

    def __init__(self, pixels: Tensor, encoder: Encoder, seed: int):
        super().__init__(pixels, encoder)
        self.seed = int(seed)
        self._epoch: int | None = None
        self._drawn: Tensor | None = None

    def epoch_pixels(self, epoch: int) -> Tensor:
        """The whole training part as binarised for ``epoch``: uint8 {0, 255} [N, C, H, W]."""
        if self._epoch != epoch:
            self._drawn = stochastic_binarize(self.pixels, binarization_seed(self.seed, "train", int(epoch)))
            self._epoch = epoch
        assert self._drawn is not None
        return self._drawn

    def __getitem__(self, index: int | list[int] | Tensor) -> Tensor:
        pixels = self.epoch_pixels(getattr(index, "epoch", 0))
        if isinstance(index, int):
            return self.encoder.encode_uint8(pixels[index : index + 1])[0]
        return self.encoder.encode_uint8(pixels[torch.as_tensor(list(index), dtype=torch.long)])


class IndexBatchSampler(DistributedSampler):
    """Yields batches as lists of dataset indices, sharded across ``num_replicas`` ranks.

    Each batch is an :class:`IndexBatch` (a list of indices with the epoch).
    Every epoch all ranks draw the same permutation (``torch.randperm`` seeded with
    ``seed + epoch``; the identity when ``shuffle=False``). With ``drop_last=True`` the
    permutation is cut to a multiple of ``num_replicas``; otherwise it is padded by wrapping
    around (as ``DistributedSampler`` does). Rank r takes every ``num_replicas``-th index
    starting at r, so shards are disjoint (up to the padding) and of equal length, and cuts
    its shard into batches of ``batch_size`` (the per-rank batch size), dropping a final
    short batch when ``drop_last`` (CD batch statistics want full batches). All ranks
    therefore run the same number of steps.

    ``num_replicas``/``rank`` default to the initialised process group (1 and 0 without one).
    Lightning calls :meth:`set_epoch` before every epoch; in a plain loop that does not, each
    new iteration advances the epoch by itself, so the order still changes between epochs.

    :meth:`state_dict`/:meth:`load_state_dict`: the position ``{"epoch", "batches_done"}``; after
    ``load_state_dict`` the next iteration uses that epoch's permutation and starts at batch
    ``batches_done`` (one shot; a position at or past the epoch's end starts the next epoch). The skip
    happens at the first batch read, so an iterator created and never read (a worker loader makes one
    it does not use) leaves it for the next.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        *,
        shuffle: bool = True,
        drop_last: bool = True,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ):
        # DistributedSampler.__init__ is not called: it wants a dataset and a process group,
        # and this class does its own sharding. The attributes Lightning and users read are set here.
        if num_replicas is None:
            num_replicas = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        if rank is None:
            rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"invalid rank {rank} for num_replicas {num_replicas}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_samples < 0:
            raise ValueError(f"num_samples must be >= 0, got {num_samples}")
        self.dataset = None
        self.n = int(num_samples)
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.seed = int(seed)
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.epoch = 0
        self._epoch_was_set = True  # the first iteration uses epoch 0
        self._skip = 0  # batches to skip at the start of the next iteration (load_state_dict)
        self._iter_skip = 0  # batches the current iteration skipped
        self._yielded = 0  # batches yielded by the current iteration
        if self.drop_last:
            self.num_samples = self.n // self.num_replicas  # per rank
        else:
            self.num_samples = math.ceil(self.n / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def set_epoch(self, epoch: int) -> None:
        """Use permutation ``seed + epoch`` for the next iteration (same on every rank)."""
        self.epoch = int(epoch)
        self._epoch_was_set = True

    def shard_indices(self) -> Tensor:
        """This rank's indices for the current epoch, in batch order (before batching)."""
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            perm = torch.randperm(self.n, generator=g)
        else:
            perm = torch.arange(self.n)
        if self.total_size <= self.n:
            perm = perm[: self.total_size]
        elif self.n > 0:
            reps = math.ceil(self.total_size / self.n)
            perm = perm.repeat(reps)[: self.total_size]
        return perm[self.rank : self.total_size : self.num_replicas]

    def state_dict(self) -> dict[str, int]:
        """The position of the current iteration: its epoch and the batches it has yielded.

        A ``DataLoader`` with worker processes reads ahead of the batches it has handed out, so
        :class:`ResumableDataLoader` reports its own count instead.
        """
        return {"epoch": self.epoch, "batches_done": self._skip or self._iter_skip + self._yielded}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        """Start the next iteration at batch ``batches_done`` of epoch ``epoch``."""
        epoch, done = int(state_dict["epoch"]), int(state_dict["batches_done"])
        if done >= len(self):  # the epoch was complete: the next one starts from its first batch
            epoch, done = epoch + 1, 0
        self.set_epoch(epoch)
        self._skip = done

    def __iter__(self) -> Iterator[IndexBatch]:
        if not self._epoch_was_set:
            self.epoch += 1
        self._epoch_was_set = False
        skip, self._skip = self._skip, 0
        self._iter_skip, self._yielded = skip, 0
        shard = self.shard_indices()
        for i, batch in enumerate(torch.split(shard, self.batch_size)):
            if self.drop_last and batch.numel() < self.batch_size:
                break
            if i < skip:
                continue
            self._yielded += 1
            yield IndexBatch(batch.tolist(), self.epoch)

    def __len__(self) -> int:
        """Number of batches per rank."""
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)


class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` over an :class:`IndexBatchSampler` whose position Lightning saves and restores.

    ``state_dict``/``load_state_dict`` make it ``_Stateful`` for Lightning: the fit loop stores
    ``state_dict()`` in every checkpoint (``loops.fit_loop.state_dict.combined_loader``) and calls
    ``load_state_dict`` on a resume before it creates the first iterator, so a resume from a
    mid-epoch checkpoint sees the batches the stopped run had not trained on yet, in the same order.
    The position counts the batches this loader handed out (the sampler, read ahead by worker
    processes, would count more).
    """

    _last_iterator = None

    def _get_iterator(self):
        self._last_iterator = super()._get_iterator()
        return self._last_iterator

    def state_dict(self) -> dict[str, int]:
        sampler: IndexBatchSampler = self.sampler
        if sampler._skip or self._last_iterator is None:  # restored and not read yet, or never read
            return {"epoch": sampler.epoch, "batches_done": sampler._skip}
        handed_out = int(getattr(self._last_iterator, "_num_yielded", 0))
        return {"epoch": sampler.epoch, "batches_done": sampler._iter_skip + handed_out}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.sampler.load_state_dict(state_dict)
