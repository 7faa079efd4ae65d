"""Wall-clock seconds per phase of a flow run attempt (validate, upload, submit, wait, download, report)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from prefect_scenario.flows.result import PhaseTimings


@dataclass
class Stopwatch:
    """Wall-clock seconds per phase of a flow run attempt."""

    started: float = field(default_factory=time.monotonic)
    seconds: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the block as phase ``name`` (accumulating when a phase runs more than once)."""
        start = time.monotonic()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.monotonic() - start

    def timings(self) -> PhaseTimings:
        """The phases measured so far, and the total since the stopwatch started."""
        return PhaseTimings(
            **{f"{name}_seconds": round(value, 3) for name, value in self.seconds.items()},
            total_seconds=round(time.monotonic() - self.started, 3),
        )


__all__ = ["Stopwatch"]
