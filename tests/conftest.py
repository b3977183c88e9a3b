import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(autouse=True)
def _isolate_env(tmp_path_factory, monkeypatch):
    # Tests never write into the user's caches.
    monkeypatch.setenv("QIDBM_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "qidbm-cache"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    yield


@pytest.fixture
def shared_dir() -> Path:
    return SHARED


def pytest_configure(config):
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
