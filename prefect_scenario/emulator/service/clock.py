"""The emulator's clock: real time plus an offset the control plane can move forward.

Job lifecycles and URL expiry are derived from this clock, never from ``time.time()`` directly,
so a test can jump past a deadline instead of sleeping through it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime


class EmulatorClock:
    """Epoch seconds from ``source`` plus an offset that only moves forward.

    Args:
        source: where real time comes from (``time.time`` by default; inject a fake in tests).
    """

    def __init__(self, source: Callable[[], float] = time.time) -> None:
        self._source = source
        self._offset = 0.0
        self._lock = threading.Lock()

    @property
    def offset_seconds(self) -> float:
        """How far the clock has been advanced past real time."""
        with self._lock:
            return self._offset

    def now(self) -> float:
        """The emulator's current time, in epoch seconds, to the millisecond.

        Milliseconds, because the API's timestamps carry no more: a job's ``createdAt`` read back
        and sent as ``createdAfter`` must then mean the same instant.
        """
        with self._lock:
            return round(self._source() + self._offset, 3)

    def advance(self, seconds: float) -> float:
        """Move the clock forward by ``seconds`` (never backwards) and return the new time."""
        if seconds < 0:
            raise ValueError("the emulator clock only moves forward: advance_seconds must be >= 0")
        with self._lock:
            self._offset += seconds
        return self.now()

    def reset(self) -> None:
        """Drop the offset: the clock reads real time again."""
        with self._lock:
            self._offset = 0.0


def iso_utc(epoch_seconds: float) -> str:
    """ISO-8601 UTC with milliseconds and ``Z``, the API's timestamp form."""
    moment = datetime.fromtimestamp(epoch_seconds, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(text: str) -> float:
    """Epoch seconds of an ISO-8601 timestamp (``Z`` or an offset; naive means UTC).

    Raises:
        ValueError: when ``text`` is not an ISO-8601 timestamp.
    """
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
