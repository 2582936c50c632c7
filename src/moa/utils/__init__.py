"""Small shared helpers (measurement, I/O) used by benchmarks, the trainer and the CLI."""
