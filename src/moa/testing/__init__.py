"""Helpers for testing moa and models built with it."""
