"""Training: optimizers, schedules, checkpoints, run records and the loop (docs/DESIGN.md §6)."""

from moa.train.loop import Evaluation, RunDirError, TrainingDiverged, evaluate, train

__all__ = ["train", "evaluate", "Evaluation", "TrainingDiverged", "RunDirError"]
