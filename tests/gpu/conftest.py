"""GPU tests (each module is marked ``gpu``): they run on CUDA and are skipped without it.

``MOA_GPU_TESTS_ON_CPU=1`` runs them on CPU instead (Triton kernels through the
interpreter, gloo instead of NCCL): slow, and only a check that the test code itself runs
on a machine without a GPU; the numbers that matter come from CUDA.
"""

import os
from pathlib import Path

import pytest
import torch

ON_CPU = os.environ.get("MOA_GPU_TESTS_ON_CPU") == "1" and not torch.cuda.is_available()
if ON_CPU:
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before the Triton kernels are first imported


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available() or ON_CPU:
        return
    here = Path(__file__).parent
    skip = pytest.mark.skip(reason="needs a CUDA device (MOA_GPU_TESTS_ON_CPU=1 runs these on CPU)")
    for item in items:
        if here in Path(item.path).parents:
            item.add_marker(skip)


@pytest.fixture
def device() -> torch.device:
    return torch.device("cpu" if ON_CPU else "cuda")
