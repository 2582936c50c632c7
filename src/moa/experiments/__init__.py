"""Experiments: compare, scale, expressivity and gate analysis (MOA.md §8)."""
