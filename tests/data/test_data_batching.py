"""Whole-batch serving and DDP sharding, checked without spawning processes (each rank's
sampler is built with explicit num_replicas / rank)."""

import json
import os

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from qidbm.data.batching import IndexBatchSampler, TensorBatchDataset
from qidbm.data.encodings import Encoder, make_info


def ranks(n, bs, world, **kw):
    return [IndexBatchSampler(n, bs, num_replicas=world, rank=r, **kw) for r in range(world)]


@pytest.mark.parametrize("n,bs,world", [(100, 10, 1), (100, 10, 2), (103, 7, 2), (103, 7, 3), (50, 64, 1)])
def test_train_shards_disjoint_equal_full_batches(n, bs, world):
    samplers = ranks(n, bs, world, shuffle=True, drop_last=True, seed=5)
    batches = [list(s) for s in samplers]
    per_rank = n // world
    for s, bl in zip(samplers, batches):
        assert len(bl) == len(s) == per_rank // bs  # every rank runs the same number of steps
        assert all(len(b) == bs for b in bl)  # drop_last: only full batches
    flat = [i for bl in batches for b in bl for i in b]
    assert len(flat) == len(set(flat))  # disjoint across ranks and batches
    assert set(flat) <= set(range(n))
    # the shards before batching partition a permutation cut to world * (n // world)
    shards = [set(s.shard_indices().tolist()) for s in samplers]
    assert sum(map(len, shards)) == per_rank * world and len(set().union(*shards)) == per_rank * world


def test_eval_shards_cover_everything_with_padding():
    n, bs, world = 23, 4, 2
    samplers = ranks(n, bs, world, shuffle=False, drop_last=False)
    seen = [i for s in samplers for b in s for i in b]
    assert set(seen) == set(range(n))
    assert len(seen) == 24  # one index repeated so both ranks hold 12 (as DistributedSampler pads)
    assert [len(s) for s in samplers] == [3, 3]
    single = IndexBatchSampler(n, bs, shuffle=False, drop_last=False, num_replicas=1, rank=0)
    assert [i for b in single for i in b] == list(range(n))  # in order, last batch short
    assert [len(b) for b in single] == [4, 4, 4, 4, 4, 3]


def test_same_permutation_on_all_ranks_and_new_one_each_epoch():
    a, b = ranks(40, 5, 2, shuffle=True, drop_last=True, seed=1)
    e0 = (list(a), list(b))
    a.set_epoch(1)
    b.set_epoch(1)
    e1 = (list(a), list(b))
    assert e0 != e1
    for x, y in (e0, e1):  # within an epoch the ranks stay disjoint
        assert not {i for bt in x for i in bt} & {i for bt in y for i in bt}
    # reproducible: epoch 1 again gives the same batches; seed + epoch fixes the order
    a.set_epoch(1)
    assert list(a) == e1[0]
    c = IndexBatchSampler(40, 5, shuffle=True, drop_last=True, seed=1, num_replicas=2, rank=0)
    c.set_epoch(1)
    assert list(c) == e1[0]


def test_epoch_advances_without_set_epoch():
    s = IndexBatchSampler(30, 10, shuffle=True, drop_last=True, seed=0, num_replicas=1, rank=0)
    first, second = list(s), list(s)
    assert first != second and s.epoch == 1
    s.set_epoch(0)
    assert list(s) == first


def test_sampler_is_what_lightning_leaves_alone():
    # Lightning only injects its own DistributedSampler when the loader's sampler is not one
    s = IndexBatchSampler(10, 2, num_replicas=2, rank=1)
    assert isinstance(s, DistributedSampler)
    assert (s.num_replicas, s.rank) == (2, 1)
    with pytest.raises(ValueError, match="invalid rank"):
        IndexBatchSampler(10, 2, num_replicas=2, rank=2)


def test_lightning_ddp_connector_keeps_our_sampler():
    """Lightning's data connector (DDP, 2 CPU processes configured, none launched) must not
    re-wrap our sampler, but would re-wrap a plain RandomSampler loader."""
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False, enable_checkpointing=False)
    conn = trainer._data_connector
    ds = TensorBatchDataset(torch.zeros(10, 1, 2, 2, dtype=torch.uint8), Encoder(make_info("t", "binary", [1, 2, 2])))
    ours = DataLoader(ds, batch_size=None, sampler=IndexBatchSampler(10, 2, num_replicas=2, rank=0))
    plain = DataLoader(ds, batch_size=2, sampler=RandomSampler(ds))
    assert conn._requires_distributed_sampler(plain)  # the check is live in this configuration
    assert not conn._requires_distributed_sampler(ours)


def test_dataset_list_indexing_encodes_whole_batch():
    g = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (20, 1, 3, 3), generator=g, dtype=torch.uint8)
    enc = Encoder(make_info("t", "bitplanes", [1, 3, 3]))
    ds = TensorBatchDataset(pixels, enc)
    idx = [3, 0, 17]
    assert torch.equal(ds[idx], enc.encode_uint8(pixels[idx]))
    assert torch.equal(ds[5], enc.encode_uint8(pixels[5:6])[0])
    loader = DataLoader(ds, batch_size=None, sampler=IndexBatchSampler(20, 6, shuffle=True, drop_last=True, seed=2, num_replicas=1, rank=0))
    out = list(loader)
    assert len(out) == 3 and all(b.shape == (6, 72) and b.dtype == torch.float32 for b in out)
    with pytest.raises(ValueError, match="uint8"):
        TensorBatchDataset(pixels.float(), enc)


class _RankProbe(L.LightningModule):
    """Records, per rank, the batches it trained on and the sampler Lightning left in place."""

    def __init__(self, out_dir: str):
        super().__init__()
        self.out_dir = out_dir
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.sums: list = []

    def training_step(self, batch, i):
        self.sums.append([self.current_epoch, int(batch.shape[0]), batch.sum().item()])
        return (self.w * batch.mean()).sum()

    def on_train_end(self):
        dl = self.trainer.train_dataloader
        rec = {
            "sampler": type(dl.sampler).__name__,
            "replicas": dl.sampler.num_replicas,
            "rank": dl.sampler.rank,
            "epoch": dl.sampler.epoch,
            "steps": self.sums,
            "shard_last_epoch": sorted(dl.sampler.shard_indices().tolist()),
        }
        with open(os.path.join(self.out_dir, f"rank{self.global_rank}.json"), "w") as f:
            json.dump(rec, f)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.slow
def test_real_ddp_two_processes(tmp_path):
    """Two CPU processes under Lightning DDP (spawned): our sampler is kept, shards are disjoint,
    both ranks run the same number of full steps, and set_epoch reaches the sampler."""
    from qidbm.data import MNISTDataModule
    from qidbm.data.testing import make_idx_dataset

    make_idx_dataset(tmp_path / "src", "MNIST", 64, 16)
    dm = MNISTDataModule(root=str(tmp_path / "src"), cache_dir=str(tmp_path / "cache"), batch_size=8, download=False)
    dm.prepare_data()
    trainer = L.Trainer(
        accelerator="cpu", devices=2, strategy="ddp_spawn", max_epochs=2, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(_RankProbe(str(tmp_path)), datamodule=dm)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    for r, rec in enumerate((r0, r1)):
        assert rec["sampler"] == "IndexBatchSampler" and rec["replicas"] == 2 and rec["rank"] == r
        assert rec["epoch"] == 1 and len(rec["steps"]) == 2 * 4 and all(s[1] == 8 for s in rec["steps"])
    assert not set(r0["shard_last_epoch"]) & set(r1["shard_last_epoch"])
    assert len(r0["shard_last_epoch"]) == len(r1["shard_last_epoch"]) == 32
