"""What a suspended flow run records about the jobs it waits on, for the watcher and for itself.

A flow run in ``wait="suspend"`` mode submits its job, writes what it waits on onto its own flow
run, and suspends (its process exits). Two readers need that record, and neither has the process:

* **the watcher** (:mod:`prefect_scenario.watcher`) finds the runs to wake: the tag
  :data:`WAITING_TAG` (Prefect 3.9 filters flow runs by tag, not by label), then the labels
  :data:`AWAITING_LABEL` (the job ids), :data:`DEADLINE_LABEL` (when the wait gives up) and
  :data:`WAKE_LABEL` (``all``: wake once every job ended, a single flow's split-free wait;
  ``any``: wake as soon as one ended, a batch that has more clips to submit in its place);
* **the run itself, once resumed**, reads its *journal*: ``scenario.paid.<slot>`` = the job id the
  slot bought. The journal lives on the Prefect server, not in result storage, so a resume on a
  machine that cannot read the first attempt's results still finds its job and never pays again.

The wake-up event's id is derived from (job id, status, flow run id): a webhook delivery and a
sweep that see the same job end emit the same event, which Prefect stores once.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

WaitMode = Literal["inline", "suspend"]
WAIT_MODES: tuple[WaitMode, ...] = ("inline", "suspend")

WAITING_TAG = "scenario-waiting"
AWAITING_LABEL = "scenario.awaiting"
DEADLINE_LABEL = "scenario.wait_deadline"
SCOPE_LABEL = "scenario.scope"
WAKE_LABEL = "scenario.wake_on"
WakePolicy = Literal["all", "any"]
JOURNAL_PREFIX = "scenario.paid."
# Pause keys of this package start with it; the number after it counts this run's suspends.
PAUSE_KEY_PREFIX = "scenario-wait-"

_EVENT_NAMESPACE = uuid.UUID("6f1d0c4e-5b7a-4c1e-9f0e-3c2b8d9a7e51")


def journal_label(slot: str) -> str:
    """The label that holds the job bought for ``slot`` (``job``, ``chunk-3``, ...)."""
    return f"{JOURNAL_PREFIX}{slot}"


def journaled_job(labels: Mapping[str, Any] | None, slot: str) -> str | None:
    """The job id the journal holds for ``slot``; None when the slot bought nothing yet."""
    value = (labels or {}).get(journal_label(slot))
    return str(value) if value else None


def wake_event_id(job_id: str, status: str, flow_run_id: str) -> uuid.UUID:
    """The id of the event that says ``job_id`` reached ``status``, for the run waiting on it.

    The same for every sender (sweep, webhook, the run itself), so Prefect stores it once.
    """
    return uuid.uuid5(_EVENT_NAMESPACE, f"{job_id}:{status}:{flow_run_id}")


def next_pause_key(pause_keys: set[str] | frozenset[str] | list[str] | None) -> str:
    """A pause key this run has not fired yet: a resumed run that must wait more suspends anew."""
    fired = sum(1 for key in pause_keys or () if key.startswith(PAUSE_KEY_PREFIX))
    return f"{PAUSE_KEY_PREFIX}{fired + 1}"


@dataclass(frozen=True)
class Waiter:
    """A suspended flow run as its record reads: the jobs it waits on and its deadline.

    Attributes:
        flow_run_id: the suspended flow run.
        job_ids: the Scenario jobs it waits on.
        deadline: when its wait gives up (the watcher wakes it then, so it ends with a message
            naming the job); None when it has none.
        scope: the credentials scope of its jobs (endpoint and project): a watcher wakes only the
            runs of its own scope.
        wake_on: ``all``: wake the run once every job ended; ``any``: once one of them ended.
        since: a lower bound on when its jobs can end: the flow run's ``start_time`` (its
            ``created`` when it never started). The run saw each job still running after it
            started (it suspends only then), so the job's end, and any later change, is dated
            after it; a job the run submitted itself has every update after it. On Prefect's
            clocks, not Scenario's: the watcher allows its ``overlap`` for the difference. None
            when unknown.
    """

    flow_run_id: str
    job_ids: tuple[str, ...]
    deadline: datetime | None
    scope: str | None
    since: datetime | None = None
    wake_on: WakePolicy = "all"

    @classmethod
    def from_labels(
        cls, flow_run_id: str, labels: Mapping[str, Any] | None, since: datetime | None = None
    ) -> Waiter | None:
        """The waiter a flow run's labels describe; None when they name no job.

        Args:
            flow_run_id: the flow run.
            labels: its labels.
            since: see :attr:`since` (naive means UTC).
        """
        labels = labels or {}
        ids = tuple(item.strip() for item in str(labels.get(AWAITING_LABEL) or "").split(",") if item.strip())
        if not ids:
            return None
        deadline = None
        raw = labels.get(DEADLINE_LABEL)
        if raw:
            try:
                deadline = datetime.fromisoformat(str(raw))
            except ValueError:
                deadline = None
            if deadline is not None and deadline.tzinfo is None:
                deadline = deadline.replace(tzinfo=UTC)
        scope = labels.get(SCOPE_LABEL)
        if since is not None and since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        wake_on: WakePolicy = "any" if labels.get(WAKE_LABEL) == "any" else "all"
        return cls(flow_run_id, ids, deadline, str(scope) if scope else None, since, wake_on)

    def wakes_on(self, ended: Iterable[str]) -> bool:
        """True when the jobs ``ended`` (ids) are reason enough to wake the run, by its policy."""
        done = set(ended) & set(self.job_ids)
        return bool(done) if self.wake_on == "any" else len(done) == len(set(self.job_ids))

    def overdue(self, now: datetime) -> bool:
        """True when the wait's deadline has passed."""
        return self.deadline is not None and now >= self.deadline


def waiting_labels(
    job_ids: list[str],
    deadline: datetime,
    scope: str,
    journal: Mapping[str, str],
    wake_on: WakePolicy = "all",
) -> dict[str, str | int | float | bool]:
    """The labels a run writes before it suspends (PATCHed into its labels, merged by Prefect)."""
    labels: dict[str, str | int | float | bool] = {
        AWAITING_LABEL: ",".join(job_ids),
        DEADLINE_LABEL: deadline.isoformat(timespec="seconds"),
        SCOPE_LABEL: scope,
        WAKE_LABEL: wake_on,
    }
    labels.update({journal_label(slot): job_id for slot, job_id in journal.items()})
    return labels


__all__ = [
    "AWAITING_LABEL",
    "DEADLINE_LABEL",
    "JOURNAL_PREFIX",
    "PAUSE_KEY_PREFIX",
    "SCOPE_LABEL",
    "WAITING_TAG",
    "WAIT_MODES",
    "WAKE_LABEL",
    "WaitMode",
    "Waiter",
    "WakePolicy",
    "journal_label",
    "journaled_job",
    "next_pause_key",
    "waiting_labels",
    "wake_event_id",
]
