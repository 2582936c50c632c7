"""TokenBatcher and val_batches: determinism, shifts, row slices, epochs, the fixed val set."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moa.data import DataConfig, DataError, TokenBatcher, prepare_data, val_batches

L, B = 8, 6


def positions(n: int) -> np.ndarray:
    """Tokens equal to their own position, so a window's content tells where it came from."""
    return np.arange(n, dtype=np.uint32)


def test_windows_and_shapes():
    # 12·L tokens hold 11 full windows with their shifted targets, not 12: the 12th window's
    # last target would be token 12·L, one past the end
    n = 12 * L
    batcher = TokenBatcher(positions(n), seq_len=L, batch_size=B, seed=0)
    assert batcher.windows == (n - 1) // L == 11
    starts = set()
    for step in range(4):  # 24 windows: every one of the 11 is drawn
        x, y = batcher.batch(step)
        assert x.shape == y.shape == (B, L) and x.dtype == y.dtype == torch.int64
        assert torch.equal(y, x + 1)  # the targets are the inputs shifted by one
        assert torch.all(x[:, 0] % L == 0)  # windows start on the stride
        assert int(y.max()) <= n - 1  # the last target exists
        starts |= set(x[:, 0].tolist())
    assert starts == {i * L for i in range(11)}


def test_targets_are_shifted_inputs_on_real_data(text_corpus, cache_dir):
    data = prepare_data(DataConfig(source=f"text:{text_corpus}", cache_dir=cache_dir))
    batcher = TokenBatcher(data.train_tokens, seq_len=64, batch_size=4, seed=3)
    x, y = batcher.batch(5)
    assert torch.equal(x[:, 1:], y[:, :-1])
    for row, start in zip(x, batcher.window_indices(5) * 64):
        assert row.tolist() == data.train_tokens[start:start + 64].tolist()


def test_deterministic_and_pure_in_step():
    tokens = positions(1000)
    a = TokenBatcher(tokens, seq_len=L, batch_size=B, seed=7)
    b = TokenBatcher(tokens, seq_len=L, batch_size=B, seed=7)
    # Out of order and from a fresh instance (a resumed run): the same batches.
    for step in (40, 3, 0, 41, 3):
        assert all(torch.equal(u, v) for u, v in zip(a.batch(step), b.batch(step)))
    other = TokenBatcher(tokens, seq_len=L, batch_size=B, seed=8)
    assert not torch.equal(a.batch(0)[0], other.batch(0)[0])


def test_row_slices_are_disjoint_and_make_the_global_batch():
    batcher = TokenBatcher(positions(1000), seq_len=L, batch_size=B, seed=1)
    for step in (0, 17):
        full_x, full_y = batcher.batch(step)
        slices = [(0, 2), (2, 3), (3, 6)]
        parts = [batcher.batch(step, start, stop) for start, stop in slices]
        assert torch.equal(torch.cat([p[0] for p in parts]), full_x)
        assert torch.equal(torch.cat([p[1] for p in parts]), full_y)
        starts = [set(p[0][:, 0].tolist()) for p in parts]
        assert sum(len(s) for s in starts) == len(set.union(*starts)) == B
    with pytest.raises(DataError, match="rows 4:2"):
        batcher.batch(0, 4, 2)


def test_steps_within_an_epoch_use_disjoint_windows_and_epochs_roll_over():
    batcher = TokenBatcher(positions(10 * L + 1), seq_len=L, batch_size=4, seed=0)
    W = batcher.windows
    assert W == 10  # not a multiple of B: step 2 straddles epochs 0 and 1
    seen = [batcher.window_indices(step) for step in range(5)]  # 20 positions = 2 epochs
    stream = np.concatenate(seen)
    assert sorted(stream[:W]) == list(range(W)) and sorted(stream[W:]) == list(range(W))
    assert stream[:W].tolist() != stream[W:].tolist()  # each epoch has its own order
    assert len(set(seen[0]) | set(seen[1])) == 8  # steps 0 and 1 share no window
    assert [batcher.epoch_of(s) for s in range(6)] == [0, 0, 0, 1, 1, 2]  # epoch of the first row
    assert np.array_equal(stream[:W], batcher.order(0)) and np.array_equal(stream[W:], batcher.order(1))


def test_too_small_corpus_is_a_one_line_error():
    with pytest.raises(DataError) as info:
        TokenBatcher(positions(50), seq_len=L, batch_size=B + 1, seed=0)
    assert str(info.value) == (
        "corpus has 50 tokens = 6 windows of seq_len+1=9; need at least batch_size=7 windows; "
        "use a smaller batch/seq_len or more data"
    )
    for bad in ({"seq_len": 0}, {"batch_size": -1}, {"seed": -1}, {"seq_len": 2.5}):
        kwargs = {"seq_len": L, "batch_size": B, "seed": 0, **bad}
        with pytest.raises(DataError, match=repr(next(iter(bad.values())))):
            TokenBatcher(positions(1000), **kwargs)


def test_val_batches_are_fixed_contiguous_and_capped():
    tokens = positions(10 * L + 5)
    batches = val_batches(tokens, seq_len=L, batch_size=3, max_tokens=7 * L + 3)
    assert [x.shape[0] for x, _ in batches] == [3, 3, 1]  # 7 windows: max_tokens // seq_len
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    assert torch.equal(x.flatten(), torch.arange(7 * L))  # the first windows, in order
    assert torch.equal(y, x + 1)
    again = val_batches(tokens, seq_len=L, batch_size=3, max_tokens=7 * L + 3)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(batches, again))
    everything = val_batches(tokens, seq_len=L, batch_size=100, max_tokens=10**9)
    assert everything[0][0].shape == (10, L)


def test_val_batches_errors():
    with pytest.raises(DataError, match="val split has 8 tokens, fewer than one window of seq_len\\+1=9"):
        val_batches(positions(L), seq_len=L, batch_size=2, max_tokens=100)
    with pytest.raises(DataError, match="max_tokens=5"):
        val_batches(positions(100), seq_len=L, batch_size=2, max_tokens=5)
