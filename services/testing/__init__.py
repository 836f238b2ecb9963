"""Test harness for the platform: in-process apps, real-process stacks, typed clients, helpers."""
