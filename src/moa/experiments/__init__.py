"""Experiments: compare, scale, expressivity and gate analysis (docs/DESIGN.md §10)."""
