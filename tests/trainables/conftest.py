"""Trainables tests run torch on one thread: several engineers and CI share 2 cores, and
oversubscribed OpenMP threads slow everything down many times over."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
