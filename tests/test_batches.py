"""In-memory minibatches: every sample once per epoch, reshuffled, reproducible, validated."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from darkknowledge.data.batches import minibatches, num_batches


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 300), batch_size=st.integers(1, 80), seed=st.integers(0, 2**31 - 1))
def test_every_sample_exactly_once_per_epoch(n, batch_size, seed):
    g = torch.Generator().manual_seed(seed)
    batches = list(minibatches(n, batch_size=batch_size, generator=g))
    assert len(batches) == math.ceil(n / batch_size) == num_batches(n, batch_size=batch_size)
    assert all(b.dtype == torch.int64 and b.dim() == 1 for b in batches)
    assert all(len(b) == batch_size for b in batches[:-1])
    assert 1 <= len(batches[-1]) <= batch_size
    assert sorted(torch.cat(batches).tolist()) == list(range(n))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 300), batch_size=st.integers(1, 80))
def test_drop_last_keeps_only_full_batches(n, batch_size):
    g = torch.Generator().manual_seed(0)
    batches = list(minibatches(n, batch_size=batch_size, generator=g, drop_last=True))
    assert len(batches) == n // batch_size == num_batches(n, batch_size=batch_size, drop_last=True)
    assert all(len(b) == batch_size for b in batches)
    seen = torch.cat(batches).tolist() if batches else []
    assert len(set(seen)) == len(seen) == (n // batch_size) * batch_size


def test_each_epoch_is_reshuffled_and_seed_reproducible():
    g = torch.Generator().manual_seed(123)
    e1 = torch.cat(list(minibatches(1000, batch_size=64, generator=g)))
    e2 = torch.cat(list(minibatches(1000, batch_size=64, generator=g)))
    assert not torch.equal(e1, e2)  # a new order each epoch
    assert sorted(e1.tolist()) == sorted(e2.tolist()) == list(range(1000))
    g2 = torch.Generator().manual_seed(123)
    assert torch.equal(torch.cat(list(minibatches(1000, batch_size=64, generator=g2))), e1)
    # the permutation is torch.randperm from the generator: independent reference
    assert torch.equal(e1, torch.randperm(1000, generator=torch.Generator().manual_seed(123)))


def test_shuffle_false_is_in_order():
    got = [b.tolist() for b in minibatches(7, batch_size=3, shuffle=False)]
    assert got == [[0, 1, 2], [3, 4, 5], [6]]


def test_generator_leaves_global_rng_alone():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    list(minibatches(50, batch_size=8, generator=torch.Generator().manual_seed(1)))
    assert torch.equal(torch.rand(3), expected)


def test_indices_gather_rows():
    X = torch.arange(20.0).reshape(10, 2)
    g = torch.Generator().manual_seed(0)
    rows = torch.cat([X[idx] for idx in minibatches(10, batch_size=4, generator=g)])
    assert sorted(rows[:, 0].tolist()) == X[:, 0].tolist()


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"n": 0, "batch_size": 4}, ValueError, r"n must be an integer >= 1, got 0 instead"),
        ({"n": 10, "batch_size": 0}, ValueError, r"batch_size must be an integer >= 1, got 0 instead"),
        ({"n": 10, "batch_size": 2.5}, TypeError, r"batch_size must be an integer, got float instead"),
        ({"n": 10.0, "batch_size": 2}, TypeError, r"n must be an integer, got float instead"),
        ({"n": 10, "batch_size": 2, "generator": 3}, TypeError, r"generator must be a torch.Generator or None, got int"),
    ],
)
def test_bad_arguments(kwargs, exc, match):
    n = kwargs.pop("n")
    with pytest.raises(exc, match=match):
        list(minibatches(n, **kwargs))
