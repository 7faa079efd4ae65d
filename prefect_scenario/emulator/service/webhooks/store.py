"""The webhook endpoints and deliveries of one emulator, and what a job's events become.

Every change goes through the state's lock (request handlers, the model threads and the
dispatcher's thread all reach in here). Nothing here sends anything: the
:class:`~.dispatcher.DeliveryDispatcher` asks :meth:`WebhookStore.collect` what is due, gets each
round ready with :meth:`WebhookStore.prepare` and reports the answers to
:meth:`WebhookStore.record`; retries and fault effects are decided here, so they read as one
state machine: ``created -> retrying -> success | failed``.

Which events: a custom job's ``generation.created`` when it is admitted, and
``generation.completed`` / ``generation.failed`` when it ends (canceled jobs have no event). They
go to every enabled endpoint of the job's project (its ``projectId`` query, or
``config.owner_id`` without one) that enables the type or ``*`` and existed when the event
happened. Times are on the emulator clock, so advancing it releases delays and retries at once;
only the ``webhook-timestamp`` a signature covers is wall-clock time (see :meth:`WebhookStore.prepare`).
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prefect_scenario.emulator.service.clock import iso_utc
from prefect_scenario.emulator.service.config import EmulatorConfig
from prefect_scenario.emulator.service.ids import new_id
from prefect_scenario.emulator.service.records import JobRecord
from prefect_scenario.emulator.service.webhooks.dispatcher import DeliveryDispatcher
from prefect_scenario.emulator.service.webhooks.faults import WebhookFaultRule
from prefect_scenario.emulator.service.webhooks.records import (
    Attempt,
    DeliveryRecord,
    DeliveryStatus,
    EndpointRecord,
    OwnerType,
    is_success,
)
from prefect_scenario.emulator.service.webhooks.signing import new_secret, signature_headers

if TYPE_CHECKING:
    from prefect_scenario.emulator.service.state import EmulatorState

logger = logging.getLogger(__name__)

# How a job looks on the wire (``api.wire.job_wire``): the API layer provides it (see create_app),
# so each payload's ``data.job`` is exactly what GET /jobs/{jobId} answers, without the service
# importing the API.
JobRenderer = Callable[[JobRecord, float, EmulatorConfig], dict[str, Any]]

ENDPOINT_PREFIX = "webhook_"
DELIVERY_PREFIX = "event_"
RULE_PREFIX = "rule_"
CREATED_EVENT = "generation.created"
END_EVENTS = {"success": "generation.completed", "failure": "generation.failed"}
USER_AGENT = "Scenario-Webhooks (prefect-scenario emulator)"
# What a dropped delivery's log shows: the sender believes it was delivered.
DROPPED_ANSWER = 200
IDLE_POLL_SECONDS = 0.01


@dataclass
class HoldGroup:
    """Deliveries an ``out_of_order`` rule holds back, released together in reverse order."""

    release_at: float
    members: list[DeliveryRecord] = field(default_factory=list)
    complete: bool = False


@dataclass(frozen=True)
class Send:
    """One round of a delivery, ready to go out: all the dispatcher needs outside the lock."""

    delivery: DeliveryRecord
    endpoint_id: str
    url: str
    headers: dict[str, str]
    body: bytes
    requests: int  # 0 (dropped), 1, or 2 (duplicated)
    timeout_seconds: float
    sent_at: float


class WebhookStore:
    """Endpoints, deliveries, delivery faults and counters of one emulator.

    Args:
        state: the emulator state whose lock, clock, settings, jobs and random generator it uses.
    """

    def __init__(self, state: EmulatorState) -> None:
        self._state = state
        self.render_job: JobRenderer | None = None
        self.endpoints: dict[str, EndpointRecord] = {}
        self.deliveries: dict[str, DeliveryRecord] = {}
        self._pending: dict[str, DeliveryRecord] = {}
        self._groups: dict[str, HoldGroup] = {}
        self._faults: list[WebhookFaultRule] = []
        # Custom jobs whose end has not been seen yet (only once the dispatcher runs).
        self._watched: set[str] = set()
        self._watching = False
        self._counters: Counter[str] = Counter()
        self._faults_fired: Counter[str] = Counter()
        self._seq = 0
        self._dispatcher = DeliveryDispatcher(self)

    # -- endpoints -------------------------------------------------------------------------

    def create_endpoint(
        self,
        owner_type: OwnerType,
        owner_id: str,
        *,
        url: str,
        enabled_events: Iterable[str],
        description: str | None = None,
    ) -> EndpointRecord:
        """Register an endpoint with a fresh secret, and start watching jobs for it."""
        with self._state.lock:
            now = self._state.clock.now()
            self._seq += 1
            endpoint = EndpointRecord(
                id=new_id(ENDPOINT_PREFIX),
                owner_type=owner_type,
                owner_id=owner_id,
                url=url,
                enabled_events=list(enabled_events),
                secret=new_secret(),
                created_at=now,
                updated_at=now,
                description=description,
                seq=self._seq,
            )
            self.endpoints[endpoint.id] = endpoint
            self._start_watching()
            return endpoint

    def endpoints_of(self, owner_type: OwnerType, owner_id: str) -> list[EndpointRecord]:
        """The endpoints of one project or team, oldest first."""
        with self._state.lock:
            found = [
                e for e in self.endpoints.values() if (e.owner_type, e.owner_id) == (owner_type, owner_id)
            ]
            return sorted(found, key=lambda endpoint: endpoint.seq)

    def endpoint(self, owner_type: OwnerType, owner_id: str, endpoint_id: str) -> EndpointRecord | None:
        """One endpoint of one project or team (None when unknown there)."""
        with self._state.lock:
            endpoint = self.endpoints.get(endpoint_id)
            if endpoint is None or (endpoint.owner_type, endpoint.owner_id) != (owner_type, owner_id):
                return None
            return endpoint

    def update_endpoint(
        self,
        endpoint: EndpointRecord,
        *,
        url: str | None = None,
        enabled: bool | None = None,
        enabled_events: Iterable[str] | None = None,
        description: str | None = None,
    ) -> EndpointRecord:
        """Change the given fields (None leaves a field as it is)."""
        with self._state.lock:
            if url is not None:
                endpoint.url = url
            if enabled is not None:
                endpoint.enabled = enabled
            if enabled_events is not None:
                endpoint.enabled_events = list(enabled_events)
            if description is not None:
                endpoint.description = description
            endpoint.updated_at = self._state.clock.now()
            return endpoint

    def delete_endpoint(self, endpoint: EndpointRecord) -> None:
        """Remove an endpoint and its deliveries; what was still to be sent to it never is."""
        with self._state.lock:
            self.endpoints.pop(endpoint.id, None)
            for delivery in [d for d in self.deliveries.values() if d.endpoint_id == endpoint.id]:
                del self.deliveries[delivery.id]
                self._pending.pop(delivery.id, None)

    def deliveries_of(self, endpoint_id: str) -> list[DeliveryRecord]:
        """Every delivery of an endpoint."""
        with self._state.lock:
            return [d for d in self.deliveries.values() if d.endpoint_id == endpoint_id]

    def delivery(self, endpoint_id: str, delivery_id: str) -> DeliveryRecord | None:
        """One delivery of an endpoint (None when unknown there)."""
        with self._state.lock:
            delivery = self.deliveries.get(delivery_id)
            return delivery if delivery is not None and delivery.endpoint_id == endpoint_id else None

    # -- delivery faults -------------------------------------------------------------------

    def add_faults(self, rules: Iterable[WebhookFaultRule]) -> list[WebhookFaultRule]:
        """Append delivery fault rules (each given an id); returns every rule still pending."""
        with self._state.lock:
            self._faults.extend(rule.model_copy(update={"id": new_id(RULE_PREFIX)}) for rule in rules)
            return self.list_faults()

    def list_faults(self) -> list[WebhookFaultRule]:
        """The delivery fault rules still pending, with their remaining counts."""
        with self._state.lock:
            return [rule.model_copy() for rule in self._faults]

    def clear_faults(self) -> None:
        """Drop every pending rule; deliveries held out of order are released (in reverse order)."""
        with self._state.lock:
            self._faults.clear()
            for group in self._groups.values():
                group.complete = True
        self._dispatcher.wake()

    def _take_fault(self, event_type: str) -> WebhookFaultRule | None:
        """One firing of the first rule matching ``event_type``: a copy, with the count left."""
        for index, rule in enumerate(self._faults):
            if not rule.matches(event_type):
                continue
            if rule.probability < 1 and self._state.rng.random() >= rule.probability:
                continue
            rule.count -= 1
            fired = rule.model_copy()
            if rule.count <= 0:
                del self._faults[index]
            self._faults_fired[rule.kind] += 1
            return fired
        return None

    # -- events of jobs ----------------------------------------------------------------------

    def job_admitted(self, job: JobRecord) -> None:
        """A custom job was created: send its ``generation.created``, and watch for its end."""
        with self._state.lock:
            if self._watching:
                self._watched.add(job.id)
            self._emit(job, CREATED_EVENT, job.created_at)
        self._dispatcher.wake()

    def _start_watching(self) -> None:
        if self._watching:
            return
        self._watching = True
        # Jobs already running when the first endpoint appears end later: their end is an event too.
        for job in self._state.jobs.values():
            if job.job_type == "custom" and not self._state.refresh(job).is_terminal:
                self._watched.add(job.id)
        self._dispatcher.start()

    def _poll_jobs(self) -> None:
        for job_id in list(self._watched):
            job = self._state.jobs.get(job_id)
            if job is None:
                self._watched.discard(job_id)
                continue
            if not self._state.refresh(job).is_terminal:
                continue
            self._watched.discard(job_id)
            event_type = END_EVENTS.get(job.status)
            if event_type is not None:
                # Dated when the job ended, not when the watcher noticed: endpoints created in
                # between were not there when it happened.
                self._emit(job, event_type, job.updated_at)

    def _emit(self, job: JobRecord, event_type: str, happened_at: float) -> None:
        try:
            self._make_deliveries(job, event_type, happened_at)
        except Exception:  # a webhook bug must never fail the API call (or the job) behind the event
            logger.exception("the %s deliveries of %s could not be made", event_type, job.id)

    def _make_deliveries(self, job: JobRecord, event_type: str, happened_at: float) -> None:
        config = self._state.config
        project = job.project_id or config.owner_id
        targets = [
            endpoint
            for endpoint in sorted(self.endpoints.values(), key=lambda e: e.seq)
            if endpoint.owner_type == "project"
            and endpoint.owner_id == project
            and endpoint.enabled
            and endpoint.wants(event_type)
            and endpoint.created_at <= happened_at
        ]
        if not targets:
            return
        if self.render_job is None:
            logger.warning(
                "no job renderer bound (use create_app): %s of %s not delivered", event_type, job.id
            )
            return
        now = self._state.clock.now()
        job_json = self.render_job(job, now, config)
        for endpoint in targets:
            delivery_id = new_id(DELIVERY_PREFIX)
            payload = {
                "id": delivery_id,
                "type": event_type,
                "createdAt": iso_utc(now),
                "data": {"job": job_json},
            }
            self._seq += 1
            delivery = DeliveryRecord(
                id=delivery_id,
                endpoint_id=endpoint.id,
                event_type=event_type,
                payload=payload,
                body=json.dumps(payload, separators=(",", ":")).encode(),
                created_at=now,
                seq=self._seq,
                updated_at=now,
                next_attempt_at=now,
            )
            self.deliveries[delivery_id] = delivery
            self._pending[delivery_id] = delivery
            self._counters["deliveries"] += 1
            self._apply_fault(delivery, now)

    def _apply_fault(self, delivery: DeliveryRecord, now: float) -> None:
        rule = self._take_fault(delivery.event_type)
        if rule is None:
            return
        delivery.fault = rule.kind
        if rule.kind == "delay":
            delivery.next_attempt_at = now + rule.seconds
        elif rule.kind == "out_of_order" and rule.id is not None:
            group = self._groups.setdefault(rule.id, HoldGroup(release_at=now + rule.hold_seconds))
            group.members.append(delivery)
            delivery.hold_group = rule.id
            group.complete = rule.count <= 0

    # -- what the dispatcher sends -------------------------------------------------------------

    def collect(self) -> list[list[DeliveryRecord]]:
        """Notice jobs that ended, then take what is due, as batches each sent in order.

        Due deliveries are batched per endpoint (in the order they were made), so two events of
        one tick reach a receiver in order; a released out-of-order group is one batch, reversed.
        Every delivery returned is marked in flight until :meth:`record`.
        """
        with self._state.lock:
            self._poll_jobs()
            now = self._state.clock.now()
            due = sorted(
                (
                    d
                    for d in self._pending.values()
                    if d.hold_group is None
                    and not d.in_flight
                    and d.next_attempt_at is not None
                    and d.next_attempt_at <= now
                ),
                key=lambda d: (d.next_attempt_at or 0.0, d.seq),
            )
            per_endpoint: dict[str, list[DeliveryRecord]] = {}
            for delivery in due:
                per_endpoint.setdefault(delivery.endpoint_id, []).append(delivery)
            batches = list(per_endpoint.values())
            for group_id, group in list(self._groups.items()):
                if group.complete or now >= group.release_at:
                    del self._groups[group_id]
                    members = [d for d in reversed(group.members) if self._pending.get(d.id) is d]
                    for delivery in members:
                        delivery.hold_group = None
                    if members:
                        batches.append(members)
            for batch in batches:
                for delivery in batch:
                    delivery.in_flight = True
            return batches

    def prepare(self, delivery: DeliveryRecord) -> Send | None:
        """The next round of ``delivery``, signed now; None when it is no longer to be sent."""
        with self._state.lock:
            if self._pending.get(delivery.id) is not delivery:
                return None  # forgotten by a reset, or its endpoint was deleted
            now = self._state.clock.now()
            endpoint = self.endpoints.get(delivery.endpoint_id)
            if endpoint is None or not endpoint.enabled:
                # A disabled endpoint is sent nothing more: what it still had to get ends unsent.
                delivery.in_flight = False
                self._finish(delivery, "failed", now)
                return None
            config = self._state.config
            first = delivery.rounds == 0
            fault = delivery.fault if first else None
            # A wrong key is a fresh secret nobody holds.
            secret = new_secret() if fault == "bad_signature" else endpoint.secret
            # Wall-clock seconds, not the emulator clock: a receiver checks the timestamp against its
            # own clock (a replay window), and a clock advance must not make every delivery look forged.
            timestamp = int(time.time())
            headers = {
                "content-type": "application/json",
                "user-agent": USER_AGENT,
                **signature_headers(
                    config.webhook_signature_scheme, secret, delivery.id, timestamp, delivery.body
                ),
            }
            return Send(
                delivery=delivery,
                endpoint_id=endpoint.id,
                url=endpoint.url,
                headers=headers,
                body=delivery.body,
                requests={"drop": 0, "duplicate": 2}.get(fault or "", 1),
                timeout_seconds=config.webhook_timeout_seconds,
                sent_at=now,
            )

    def record(self, send: Send, status_codes: list[int]) -> None:
        """Log one round's answers (:data:`~.records.NO_ANSWER` for none) and decide what is next."""
        with self._state.lock:
            delivery = send.delivery
            delivery.in_flight = False
            if self._pending.get(delivery.id) is not delivery:
                return
            now = self._state.clock.now()
            config = self._state.config
            delivery.rounds += 1
            delivery.requests_sent += len(status_codes)
            self._counters["requests_sent"] += len(status_codes)
            self._counters["requests_succeeded"] += sum(1 for code in status_codes if is_success(code))
            self._counters["requests_failed"] += sum(1 for code in status_codes if not is_success(code))
            logged = status_codes
            if send.requests == 0:
                self._counters["dropped"] += 1
                logged = [DROPPED_ANSWER]
            endpoint = self.endpoints.get(delivery.endpoint_id)
            for code in logged:
                delivery.attempts.append(Attempt(status_code=code, sent_at=send.sent_at))
                if endpoint is not None:
                    endpoint.nb_total_calls += 1
                    endpoint.nb_failed_calls += 0 if is_success(code) else 1
            if any(is_success(code) for code in logged):
                self._finish(delivery, "success", now)
            elif delivery.rounds >= config.webhook_max_attempts:
                self._finish(delivery, "failed", now)
            else:
                wait = config.webhook_retry_seconds * config.webhook_retry_factor ** (delivery.rounds - 1)
                delivery.status = "retrying"
                delivery.updated_at = now
                delivery.next_attempt_at = now + wait

    def _finish(self, delivery: DeliveryRecord, status: DeliveryStatus, now: float) -> None:
        delivery.status = status
        delivery.updated_at = now
        delivery.next_attempt_at = None
        self._pending.pop(delivery.id, None)
        self._counters[f"deliveries_{'succeeded' if status == 'success' else 'failed'}"] += 1

    def busy(self) -> bool:
        """True while a job is watched or a delivery is not final: the dispatcher keeps ticking."""
        with self._state.lock:
            return bool(self._watched or self._pending)

    # -- counters, reset, waiting ----------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """The ``webhooks`` block of ``GET /_emulator/stats``."""
        with self._state.lock:
            return {
                "endpoints": len(self.endpoints),
                "deliveries": self._counters["deliveries"],
                "deliveries_pending": len(self._pending),
                "deliveries_succeeded": self._counters["deliveries_succeeded"],
                "deliveries_failed": self._counters["deliveries_failed"],
                # HTTP requests that left the emulator (a dropped delivery sends none, a duplicate two).
                "requests_sent": self._counters["requests_sent"],
                "requests_succeeded": self._counters["requests_succeeded"],
                "requests_failed": self._counters["requests_failed"],
                "dropped": self._counters["dropped"],
                "jobs_watched": len(self._watched),
                "idle": not (self._watched or self._pending),
                "faults_fired": dict(sorted(self._faults_fired.items())),
            }

    def deliveries_view(self) -> list[dict[str, Any]]:
        """Every delivery as the control plane shows it: with the fault it met, never a secret."""
        with self._state.lock:
            return [
                {
                    "id": d.id,
                    "endpoint_id": d.endpoint_id,
                    "event_type": d.event_type,
                    "status": d.status,
                    "fault": d.fault,
                    "rounds": d.rounds,
                    "requests_sent": d.requests_sent,
                    "attempts": [
                        {"status_code": a.status_code, "sent_at": iso_utc(a.sent_at)} for a in d.attempts
                    ],
                }
                for d in sorted(self.deliveries.values(), key=lambda d: d.seq)
            ]

    def wait_idle(self, timeout_seconds: float = 10.0) -> bool:
        """Block until no job is watched and every delivery is final; False on timeout."""
        deadline = time.monotonic() + timeout_seconds
        while self.busy():
            if time.monotonic() >= deadline:
                return False
            time.sleep(IDLE_POLL_SECONDS)
        return True

    def reset(self) -> None:
        """Forget endpoints, deliveries, rules, held groups and counters (the dispatcher keeps running)."""
        with self._state.lock:
            self.endpoints.clear()
            self.deliveries.clear()
            self._pending.clear()
            self._groups.clear()
            self._faults.clear()
            self._watched.clear()
            self._counters.clear()
            self._faults_fired.clear()

    def close(self) -> None:
        """Stop the dispatcher's thread (call without holding the state's lock: it joins the thread)."""
        self._dispatcher.close()
