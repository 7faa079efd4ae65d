"""The thread that sends webhook deliveries: an asyncio loop of its own, with one httpx client.

Deliveries never ride on the server's event loop or a request's task: the emulator also runs
under ``httpx.ASGITransport``, inside a test's loop, and a job ends when the clock says so, with
no request in sight. So one daemon thread per emulator (started with its first endpoint, joined
by ``EmulatorState.close``) ticks while there is work: it asks the store what is due, sends each
batch in order, and reports the answers back. Nothing it does can block or fail an API call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from typing import TYPE_CHECKING

import httpx

from prefect_scenario.emulator.service.webhooks.records import NO_ANSWER, DeliveryRecord

if TYPE_CHECKING:
    from prefect_scenario.emulator.service.webhooks.store import Send, WebhookStore

logger = logging.getLogger(__name__)

# How often due times are checked while something is pending: they are read on the emulator
# clock, which the control plane may move at any moment.
TICK_SECONDS = 0.02
# The longest an idle loop sleeps, so it always notices it was asked to stop.
IDLE_SECONDS = 0.25
JOIN_TIMEOUT_SECONDS = 5.0


class DeliveryDispatcher:
    """Sends what the store says is due, from a thread of its own.

    Args:
        store: the webhook store it asks for work and reports answers to.
    """

    def __init__(self, store: WebhookStore) -> None:
        self._store = store
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stopping = threading.Event()
        self._guard = threading.Lock()

    def start(self) -> None:
        """Start the thread (once; never again after :meth:`close`)."""
        with self._guard:
            if self._thread is not None or self._stopping.is_set():
                return
            self._thread = threading.Thread(target=self._run, name="emulator-webhooks", daemon=True)
            self._thread.start()

    @property
    def running(self) -> bool:
        """True while the thread is alive."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def wake(self) -> None:
        """Have the loop look for work now rather than at its next tick (from any thread)."""
        loop, event = self._loop, self._wake
        if loop is None or event is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nothing to wake
            loop.call_soon_threadsafe(event.set)

    def close(self) -> None:
        """Stop the loop, abandoning rounds in flight, and join the thread."""
        with self._guard:
            self._stopping.set()
            thread = self._thread
        self.wake()
        if thread is not None and thread is not threading.current_thread():
            thread.join(JOIN_TIMEOUT_SECONDS)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._wake = wake
        tasks: set[asyncio.Task[None]] = set()
        # trust_env=False: a proxy from HTTP_PROXY must never sit between the emulator and a receiver.
        async with httpx.AsyncClient(trust_env=False, follow_redirects=False) as http:
            try:
                while not self._stopping.is_set():
                    wake.clear()
                    busy = self._tick(http, tasks)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), TICK_SECONDS if busy else IDLE_SECONDS)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                self._wake = None
                self._loop = None

    def _tick(self, http: httpx.AsyncClient, tasks: set[asyncio.Task[None]]) -> bool:
        try:
            for batch in self._store.collect():
                task = asyncio.create_task(self._send_batch(http, batch))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            return self._store.busy()
        except Exception:  # a bug here must not end the thread: every later delivery would be lost
            logger.exception("the webhook dispatcher failed to collect due deliveries")
            return True

    async def _send_batch(self, http: httpx.AsyncClient, batch: list[DeliveryRecord]) -> None:
        # One after the other: the order of a batch is the order a receiver sees.
        for delivery in batch:
            try:
                await self._send_round(http, delivery)
            except Exception:  # one delivery's failure must not stop the rest of its batch
                logger.exception("webhook delivery %s failed in the emulator", delivery.id)

    async def _send_round(self, http: httpx.AsyncClient, delivery: DeliveryRecord) -> None:
        send = self._store.prepare(delivery)
        if send is None:
            return
        codes = [await self._post(http, send) for _ in range(send.requests)]
        self._store.record(send, codes)

    async def _post(self, http: httpx.AsyncClient, send: Send) -> int:
        try:
            response = await http.post(
                send.url, content=send.body, headers=send.headers, timeout=send.timeout_seconds
            )
        except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
            # The endpoint id, never its URL: a receiver's URL may carry a token of its own.
            logger.info(
                "webhook delivery %s to %s got no answer: %s",
                send.delivery.id,
                send.endpoint_id,
                exc.__class__.__name__,
            )
            return NO_ANSWER
        return response.status_code
