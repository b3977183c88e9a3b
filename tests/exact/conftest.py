"""Shared fixtures for the exact-toolkit tests (float64, CPU)."""
import pytest
import torch


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)


@pytest.fixture(autouse=True)
def _single_thread():
    """Tiny dense/batched linear algebra is dominated by thread-pool overhead on the shared
    2-core machine (80x slower with 2 busy threads); run each test single-threaded."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
