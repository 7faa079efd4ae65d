"""A stop signal inside ``stop_signals_exit`` is a ``SystemExit`` that runs every cleanup.

The signals are real: the test process sends them to itself (``signal.raise_signal``), and Python
runs the handler between two bytecodes of the block, as it would for a ``kill`` from outside.
"""

from __future__ import annotations

import signal
import threading

import pytest

from prefect_scenario.stop_signals import stop_signals_exit

SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def _signalled(
    first: signal.Signals,
    *,
    once: bool = False,
    in_cleanup: signal.Signals | None = None,
    seen: dict[str, object] | None = None,
) -> None:
    """Sends ``first`` inside the block, then ``in_cleanup`` from its ``finally``; notes handlers."""
    seen = seen if seen is not None else {}
    with stop_signals_exit(SIGNALS, once=once):
        seen["inside"] = {sig: signal.getsignal(sig) for sig in SIGNALS}
        try:
            signal.raise_signal(first)
        finally:
            seen["cleanup"] = {sig: signal.getsignal(sig) for sig in SIGNALS}
            if in_cleanup is not None:
                signal.raise_signal(in_cleanup)


@pytest.mark.parametrize("stop", SIGNALS, ids=["sigterm", "sighup"])
def test_a_stop_signal_raises_system_exit_with_the_shells_code_and_runs_the_finally(
    stop: signal.Signals,
) -> None:
    seen: dict[str, object] = {}
    with pytest.raises(SystemExit) as raised:
        _signalled(stop, seen=seen)
    assert raised.value.code == 128 + stop
    assert "cleanup" in seen


def test_the_handlers_found_on_entry_are_back_after_the_block() -> None:
    before = {sig: signal.getsignal(sig) for sig in SIGNALS}
    seen: dict[str, object] = {}
    with pytest.raises(SystemExit):
        _signalled(signal.SIGTERM, seen=seen)
    inside = seen["inside"]
    assert isinstance(inside, dict)
    assert all(inside[sig] != before[sig] for sig in SIGNALS)
    assert {sig: signal.getsignal(sig) for sig in SIGNALS} == before


def test_once_ignores_every_stop_signal_while_the_cleanup_runs() -> None:
    seen: dict[str, object] = {}
    with pytest.raises(SystemExit) as raised:
        # The SIGHUP in the cleanup is ignored: the first exit goes on.
        _signalled(signal.SIGTERM, once=True, in_cleanup=signal.SIGHUP, seen=seen)
    assert raised.value.code == 128 + signal.SIGTERM
    assert seen["cleanup"] == dict.fromkeys(SIGNALS, signal.SIG_IGN)


def test_without_once_a_second_signal_in_the_cleanup_exits_again() -> None:
    with pytest.raises(SystemExit) as raised:
        _signalled(signal.SIGTERM, in_cleanup=signal.SIGHUP)
    assert raised.value.code == 128 + signal.SIGHUP


def test_off_the_main_thread_the_block_runs_with_the_handlers_as_they_are() -> None:
    before = signal.getsignal(signal.SIGTERM)
    seen: list[object] = []

    def inside_a_thread() -> None:
        with stop_signals_exit(SIGNALS):
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=inside_a_thread)
    thread.start()
    thread.join()
    assert seen == [before]
