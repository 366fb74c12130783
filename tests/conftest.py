"""Shared test set-up: torch on one thread.

Training tests on tiny models are dominated by thread start-up and contention when torch uses
every core of a small, shared machine (one MLP test took 93 s instead of 1 s); one thread makes
them fast and reproducible. Tests that need more threads set them themselves.
"""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _torch_on_one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
