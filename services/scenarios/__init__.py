"""The example acceptance scenarios, shipped with the package so
`safe-procurement scenario run --examples` works from an installed wheel. See README.md here for the format."""

from __future__ import annotations

from pathlib import Path

DIR = Path(__file__).parent


def files() -> list[Path]:
    """The example scenario files, in name order."""
    return sorted(p for p in DIR.iterdir() if p.suffix in (".json", ".yaml", ".yml"))
