"""ResumableDataLoader / IndexBatchSampler position: what Lightning saves in a checkpoint and gives back."""

from __future__ import annotations

import pytest
import torch

from qidbm.data import IndexBatchSampler, ResumableDataLoader


class _Rows(torch.utils.data.Dataset):
    def __len__(self):
        return 40

    def __getitem__(self, idx):
        return torch.as_tensor(idx)


def _loader(workers: int) -> ResumableDataLoader:
    sampler = IndexBatchSampler(40, 5, shuffle=True, seed=3)
    return ResumableDataLoader(_Rows(), batch_size=None, sampler=sampler, num_workers=workers)


@pytest.mark.parametrize("workers", [0, 1])
def test_position_counts_batches_handed_out_and_restores_them(workers):
    a = _loader(workers)
    a.sampler.set_epoch(2)
    it = iter(a)
    seen = [next(it) for _ in range(3)]  # a worker has read further ahead in the sampler
    state = a.state_dict()
    assert state == {"epoch": 2, "batches_done": 3}
    rest = list(it)
    b = _loader(workers)
    b.load_state_dict(state)
    assert b.state_dict() == state  # restored, not read yet
    resumed = list(b)
    assert len(seen) + len(resumed) == len(a) and all(torch.equal(x, y) for x, y in zip(rest, resumed))
    assert b.state_dict() == {"epoch": 2, "batches_done": len(a)}
    b.sampler.set_epoch(3)  # the next epoch is complete again
    assert len(list(b)) == len(a)


def test_a_complete_epoch_resumes_at_the_next():
    s = IndexBatchSampler(40, 5, shuffle=True, seed=3)
    s.load_state_dict({"epoch": 4, "batches_done": len(s)})
    assert s.epoch == 5 and len(list(s)) == len(s)
