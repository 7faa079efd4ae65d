"""How numbers are written for people: creative units and sizes, the same in logs, artifacts and the CLI.

A leaf module (no Prefect, no I/O): everything that prints a cost or a size goes through here, so a
log line, a table cell and an error message never disagree on how 7.250000001 CU reads.
"""

from __future__ import annotations

MIB = 1024 * 1024


def format_units(value: float | None, *, unit: bool = False, missing: str = "an unknown number of") -> str:
    """Creative units as people read them: ``12``, ``7.25`` (``12 CU`` with ``unit``).

    Args:
        value: the creative units; None when unknown.
        unit: append `` CU`` (table cells, where no sentence says "creative units").
        missing: what to write when ``value`` is None (``"no limit"`` for a budget, ``"—"`` in a table).
    """
    if value is None:
        return missing
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    if text in ("-0", ""):
        text = "0"
    return f"{text} CU" if unit else text


def human_size(size: int) -> str:
    """Bytes as ``12.3 MB`` (decimal units, as file browsers and S3 consoles show them)."""
    value = float(size)
    for name in ("B", "KB", "MB", "GB"):
        if value < 1000 or name == "GB":
            return f"{value:.0f} {name}" if name == "B" else f"{value:.1f} {name}"
        value /= 1000
    return f"{value:.1f} GB"  # pragma: no cover (the loop returns at GB)


def mebibytes(size: int) -> str:
    """Bytes as ``15.2 MiB``: the unit Scenario's limits are stated in (16 MiB for Runway Aleph 2)."""
    return f"{size / MIB:.1f} MiB"


__all__ = ["MIB", "format_units", "human_size", "mebibytes"]
