"""moa: Mixture of Activations (MoA) feed-forward layers and a research harness.

Reference implementation of arXiv 2605.26647, "More Expressive Feedforward Layers:
Part I. Token-Adaptive Mixing of Activations". The layers live in :mod:`moa.nn`.
"""

__version__ = "0.1.0"
