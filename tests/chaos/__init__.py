"""Chaos runs: the platform under load while its processes are killed (`make chaos`)."""
