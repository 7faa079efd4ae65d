"""Stop signals turned into ``SystemExit``, so that every cleanup on the stack runs.

SIGTERM's default handler ends the process on the spot: no ``finally`` and no ``__exit__`` runs
after it, so a server started by the process, a PostgreSQL cluster or an emulator's temporary
storage would be left behind. An exception unwinds the stack instead. Shared by the ``scenario
server`` command (which owns a Prefect server and PostgreSQL) and the emulator's ``serve``.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import NoReturn


@contextmanager
def stop_signals_exit(signals: Sequence[signal.Signals], *, once: bool = False) -> Iterator[None]:
    """Within the block, each of ``signals`` raises ``SystemExit(128 + signal)``.

    The exit code is the shell's convention for "ended by signal N", without the traceback of a
    ``KeyboardInterrupt``. The handlers found on entry are restored on exit. Off the main thread,
    where Python cannot set signal handlers, the block runs with the handlers as they are.

    Args:
        signals: the signals that stop the process (e.g. ``(signal.SIGINT, signal.SIGTERM)``).
        once: the first of them makes the process ignore all of them, so that a second Ctrl-C cannot
            cut the cleanup short.

    Example:
        >>> import signal
        >>> with stop_signals_exit((signal.SIGINT, signal.SIGTERM)):  # doctest: +SKIP
        ...     serve_forever()
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def exit_on_signal(signum: int, frame: FrameType | None) -> NoReturn:
        if once:
            ignore_signals(signals)
        raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, exit_on_signal) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def ignore_signals(signals: Sequence[signal.Signals]) -> None:
    """From now on, ``signals`` are ignored (for a stop that must run to its end)."""
    for sig in signals:
        signal.signal(sig, signal.SIG_IGN)
