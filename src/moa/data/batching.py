"""Batches of token windows: a stateless training sampler and a fixed validation set.

Training (``TokenBatcher``): the tokens are cut into ``W = (n - 1) // L`` non-overlapping
windows of ``L + 1`` tokens at stride ``L`` (window ``i`` is ``tokens[i*L : i*L + L + 1]``;
its first ``L`` tokens are the inputs, its last ``L`` the targets, so every position has a
target). Epoch ``e`` visits all windows in a random order seeded by ``(seed, e)``; the
epochs' orders are concatenated and global step ``s`` takes positions ``[s*B, (s+1)*B)``
of that sequence (a step may straddle two epochs). A batch is therefore a pure function
of ``(tokens, L, B, seed, step, rows)``:

* resume: store the step; nothing else (no iterator state, no RNG state);
* data parallel / gradient accumulation: rank ``r`` of ``R`` (or micro-batch ``r``) asks
  for rows ``[r*B/R, (r+1)*B/R)`` of the same global step; the slices are disjoint and
  their union is the global batch, so R ranks see exactly what one process sees.

The order of epoch ``e`` is ``argsort`` of the first ``W`` raw 64-bit outputs of PCG64
seeded with ``SeedSequence([seed, e])``. NumPy keeps that raw stream fixed across
versions (unlike ``Generator.permutation``'s algorithm), so a checkpoint resumes to the
same data even after a NumPy upgrade.

Validation (``val_batches``): the first contiguous windows of the validation split, the
same every call, covering at most ``max_tokens`` target tokens.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from moa.data.config import DataError


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise DataError(f"{name}={value!r} must be a positive integer")
    return int(value)


def num_windows(n_tokens: int, seq_len: int) -> int:
    """Windows of ``seq_len + 1`` tokens at stride ``seq_len`` in ``n_tokens`` tokens."""
    return max(0, (n_tokens - 1) // seq_len)


def _windows(tokens: np.ndarray, starts: np.ndarray, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets, each (len(starts), seq_len) int64, of the windows at ``starts``."""
    # Row-by-row slices read each window contiguously, which a memmap serves best.
    rows_BW = np.stack([np.asarray(tokens[s:s + seq_len + 1]) for s in starts]).astype(np.int64)
    rows_BW = torch.from_numpy(rows_BW)
    return rows_BW[:, :-1].contiguous(), rows_BW[:, 1:].contiguous()


class TokenBatcher:
    """Global step → batch of training windows, deterministic in (seed, step); see module doc."""

    def __init__(self, tokens: np.ndarray, seq_len: int, batch_size: int, seed: int) -> None:
        self.seq_len = _positive_int("seq_len", seq_len)
        self.batch_size = _positive_int("batch_size", batch_size)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise DataError(f"seed={seed!r} must be a non-negative integer")
        self.seed = int(seed)
        self.tokens = tokens
        self.windows = num_windows(len(tokens), self.seq_len)
        if self.windows < self.batch_size:
            raise DataError(
                f"corpus has {len(tokens)} tokens = {self.windows} windows of seq_len+1={self.seq_len + 1}; "
                f"need at least batch_size={self.batch_size} windows; use a smaller batch/seq_len or more data"
            )
        self._orders: dict[int, np.ndarray] = {}

    @property
    def tokens_per_step(self) -> int:
        """Target tokens in one global batch (``batch_size * seq_len``)."""
        return self.batch_size * self.seq_len

    def epoch_of(self, step: int) -> int:
        """The epoch that the first row of global step ``step`` belongs to."""
        return step * self.batch_size // self.windows

    def order(self, epoch: int) -> np.ndarray:
        """The window indices of ``epoch`` in visiting order (a permutation of ``range(W)``)."""
        if epoch not in self._orders:
            if len(self._orders) >= 2:  # a step touches at most two epochs
                del self._orders[min(self._orders)]
            bits = np.random.PCG64(np.random.SeedSequence([self.seed, epoch]))
            self._orders[epoch] = np.argsort(bits.random_raw(self.windows), kind="stable")
        return self._orders[epoch]

    def window_indices(self, step: int, start: int = 0, stop: Optional[int] = None) -> np.ndarray:
        """Indices of the windows in rows ``start:stop`` of global step ``step``'s batch."""
        stop = self.batch_size if stop is None else stop
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise DataError(f"step={step!r} must be a non-negative integer")
        if not 0 <= start < stop <= self.batch_size:
            raise DataError(f"rows {start}:{stop} are invalid; need 0 <= start < stop <= batch_size={self.batch_size}")
        positions = int(step) * self.batch_size + np.arange(start, stop)
        epochs, offsets = np.divmod(positions, self.windows)
        out = np.empty(len(positions), dtype=np.int64)
        for epoch in np.unique(epochs):
            mask = epochs == epoch
            out[mask] = self.order(int(epoch))[offsets[mask]]
        return out

    def batch(self, step: int, start: int = 0, stop: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)``, each (stop - start, seq_len) int64, for rows start:stop of step ``step``.

        ``y[:, t]`` is the token after ``x[:, t]``: the targets are the inputs shifted by one.
        """
        idx = self.window_indices(step, start, stop)
        return _windows(self.tokens, idx * self.seq_len, self.seq_len)


def val_batches(tokens: np.ndarray, seq_len: int, batch_size: int, max_tokens: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The fixed validation set: the first ``min(W, max_tokens // seq_len)`` windows, in order.

    Batches hold ``batch_size`` windows (the last may hold fewer). Every call returns the
    same tensors, so runs with equal ``seq_len``/``max_tokens`` are scored on equal data.
    """
    seq_len = _positive_int("seq_len", seq_len)
    batch_size = _positive_int("batch_size", batch_size)
    max_tokens = _positive_int("max_tokens", max_tokens)
    windows = num_windows(len(tokens), seq_len)
    if windows < 1:
        raise DataError(
            f"val split has {len(tokens)} tokens, fewer than one window of seq_len+1={seq_len + 1}; "
            "use a smaller seq_len, a larger val_fraction or more data"
        )
    if max_tokens < seq_len:
        raise DataError(f"max_tokens={max_tokens} is less than one window's {seq_len} target tokens; raise it")
    n = min(windows, max_tokens // seq_len)
    starts = np.arange(n, dtype=np.int64) * seq_len
    return [_windows(tokens, starts[i:i + batch_size], seq_len) for i in range(0, n, batch_size)]
