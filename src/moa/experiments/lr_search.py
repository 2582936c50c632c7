"""Seed-robust LR search on seeds kept apart from the reported ones (used by compare and scale).

**Seed scheme.** A seed sets a run's init and its batch order. Reported runs use the
*report seeds* ``0 … S−1``; LR-search runs use the *search seeds*
``SEARCH_SEED_BASE + i = 1000, 1001, …``. The two sets never overlap (S ≤ 1000 is
enforced), so no reported number is a run that also took part in choosing its own LR:
the min over an LR grid is never reported, and a variant whose grid grows (more draws)
gains no advantage in the table.

**Rule (the same for every variant and size).** Train every LR of the grid on every
search seed; an LR's score is its mean final validation loss over the search seeds (a
diverged run scores +∞, so an LR that diverges on any search seed never wins). While the
best LR sits at an end of the grid, the grid grows one step past that end (the grid's own
ratio there), at most ``extend_edges`` times, so every optimum is bracketed by the same
rule or flagged as on the edge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional

SEARCH_SEED_BASE = 1000


def report_seeds(n: int) -> list[int]:
    """Seeds of the reported runs: 0 … n−1."""
    if not isinstance(n, int) or not 1 <= n <= SEARCH_SEED_BASE:
        raise ValueError(f"report seeds={n!r} must be an integer in 1..{SEARCH_SEED_BASE} "
                         f"(seeds from {SEARCH_SEED_BASE} on are the LR search's)")
    return list(range(n))


def search_seeds(n: int) -> list[int]:
    """Seeds of the LR-search runs: 1000 … 1000+n−1, disjoint from every report seed."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"search seeds={n!r} must be a positive integer")
    return [SEARCH_SEED_BASE + i for i in range(n)]


def extend_grid(grid: list[float], score: dict[float, float]) -> Optional[float]:
    """The next LR to try when the best of ``score`` sits at an end of the sorted ``grid``, else None."""
    if len(grid) < 2:
        return None
    best = min(score, key=score.get)
    if not math.isfinite(score[best]):
        return None
    if best == grid[-1]:
        return grid[-1] * grid[-1] / grid[-2]
    if best == grid[0]:
        return grid[0] * grid[0] / grid[1]
    return None


@dataclass
class LRSearch:
    """Every LR tried, its final loss per search seed (+∞: diverged) and the winner."""

    seeds: list[int]
    grid: list[float] = field(default_factory=list)  # sorted
    losses: dict[float, list[float]] = field(default_factory=dict)

    def score(self, lr: float) -> float:
        """Mean final loss over the search seeds (+∞ if any diverged)."""
        values = self.losses[lr]
        return math.inf if not all(math.isfinite(v) for v in values) else sum(values) / len(values)

    @property
    def best(self) -> float:
        return min(self.grid, key=self.score)

    @property
    def best_on_edge(self) -> bool:
        return len(self.grid) > 1 and self.best in (self.grid[0], self.grid[-1])

    def to_json(self) -> dict:
        """``lr_search`` (mean per LR, None = diverged) and ``lr_search_per_seed`` for results files."""
        def finite(x: float):
            return x if math.isfinite(x) else None
        return {"lr_search": {f"{lr:.6g}": finite(self.score(lr)) for lr in self.grid},
                "lr_search_per_seed": {f"{lr:.6g}": [finite(v) for v in self.losses[lr]] for lr in self.grid},
                "best_lr": self.best, "best_lr_on_grid_edge": self.best_on_edge}


def one_by_one(fn: Callable, pairs: list[tuple]) -> list:
    """``[fn(*p) for p in pairs]``: the default way :func:`search_lr` evaluates a batch."""
    return [fn(*p) for p in pairs]


def search_lr(lrs: list[float], final_loss: Callable[[float, int], float], seeds: list[int], extend_edges: int,
              log: Optional[Callable[[str], None]] = None, label: str = "",
              map_pairs: Callable[[Callable, list[tuple]], list] = one_by_one) -> LRSearch:
    """Run the search rule of this module; ``final_loss(lr, seed)`` trains (or reuses) one run.

    ``map_pairs(final_loss, [(lr, seed), …])`` evaluates a batch of runs that do not depend
    on each other (the whole first grid; then each extension's seeds); a parallel map runs
    them concurrently, with the same result. Raises ValueError when every LR diverges on
    some search seed.
    """
    search = LRSearch(seeds=list(seeds))

    def try_lrs(new: list[float]) -> None:
        losses = map_pairs(final_loss, [(lr, s) for lr in new for s in seeds])
        for i, lr in enumerate(new):
            search.losses[lr] = list(losses[i * len(seeds):(i + 1) * len(seeds)])
        search.grid = sorted([*search.grid, *new])

    def try_lr(lr: float) -> None:
        try_lrs([lr])

    try_lrs(sorted(lrs))
    for _ in range(extend_edges):
        nxt = extend_grid(search.grid, {lr: search.score(lr) for lr in search.grid})
        if nxt is None:
            break
        if log:
            log(f"{label}best LR {search.best:.3g} is at the grid's edge; also trying {nxt:.3g}")
        try_lr(nxt)
    if not math.isfinite(search.score(search.best)):
        raise ValueError(f"{label}every LR of the search diverged on some search seed "
                         f"({', '.join(f'{lr:.3g}' for lr in search.grid)}); lower --lr-factors")
    return search
