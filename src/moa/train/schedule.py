"""Learning-rate schedules as a pure function of the step (docs/DESIGN.md §6.2).

A function of (step, total steps) needs no state of its own, so a resumed run only has
to remember the step. All schedules warm up linearly over ``warmup`` of the steps.

* cosine: half-cosine from 1 to ``min_lr_ratio`` over the rest.
* wsd (warmup–stable–decay): 1 until the last ``decay`` fraction, then linear to ``min_lr_ratio``.
* constant: 1 after warmup.
"""

from __future__ import annotations

import math

from moa.config import ScheduleConfig


def lr_multiplier(step: int, total_steps: int, cfg: ScheduleConfig) -> float:
    """Multiplier of the base LR for optimizer step ``step`` (0-based) of ``total_steps``."""
    warmup = int(round(cfg.warmup * total_steps))
    if step < warmup:
        return (step + 1) / warmup
    if cfg.name == "constant":
        return 1.0
    floor = cfg.min_lr_ratio
    if cfg.name == "cosine":
        span = max(1, total_steps - warmup)
        progress = min(1.0, (step - warmup) / span)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    decay_steps = int(round(cfg.decay * total_steps))
    decay_start = total_steps - decay_steps
    if step < decay_start or decay_steps == 0:
        return 1.0
    progress = (step - decay_start + 1) / decay_steps
    return 1.0 - (1 - floor) * progress
