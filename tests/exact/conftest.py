"""Shared fixtures for the exact-toolkit tests (float64, CPU)."""
import pytest
import torch


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)
