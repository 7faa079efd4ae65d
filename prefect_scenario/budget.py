"""Budgets in creative units: one rule, one tolerance, one message, for a job, a split clip and a batch.

A budget is checked against free estimates (dry runs) before anything is spent, wherever the money
is: ``submit_job`` for one job, the chunked edit for the sum of its chunks, and the batch's plan for
the running total of its clips. A leaf module: it decides, it never calls the API.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from prefect_scenario.errors import BudgetExceededError
from prefect_scenario.formatting import format_units

# Estimates are sums of floats: 0.1 + 0.2 must not pass a budget of 0.3.
TOLERANCE = 1e-9


def over_budget(cost: float, budget: float | None) -> bool:
    """True when ``cost`` passes ``budget`` (no budget: never)."""
    return budget is not None and cost > budget + TOLERANCE


def check_budget(what: str, cost: float, budget: float | None, *, cheaper: str) -> None:
    """Refuse, before spending, when ``cost`` passes ``budget``.

    Args:
        what: what would cost it, as a sentence's subject ("Runway Aleph 2 on the whole clip (3 chunks)").
        cost: the estimate, in creative units.
        budget: the budget (``max_creative_units``); None: no budget.
        cheaper: how to make the job cheaper, for the message.

    Raises:
        BudgetExceededError: the estimate is over the budget; nothing was submitted or spent.
    """
    if not over_budget(cost, budget):
        return
    assert budget is not None
    raise BudgetExceededError(
        f"{what} would cost {format_units(cost)} creative units, over the budget of {format_units(budget)} "
        f"(max_creative_units); nothing was submitted or spent. Raise max_creative_units to at least "
        f"{format_units(cost)}, or {cheaper}.",
        estimate=cost,
        budget=budget,
    )


@dataclass(frozen=True)
class BudgetPlan:
    """Which items of a batch run within its budget.

    Attributes:
        admitted: indexes of the items admitted, in order.
        planned: the sum of their estimates.
        stop: why the rest was skipped (None: nothing was).
    """

    admitted: list[int]
    planned: float
    stop: str | None


def plan_within_budget(costs: Sequence[float | None], budget: float | None) -> BudgetPlan:
    """Admit items in order while the running total of their estimates stays within ``budget``.

    From the first item that would pass the budget on, every item is left out (not only that one): a
    batch's order is the user's priority, and a cheaper clip later must not jump the queue.

    Args:
        costs: each item's estimate (None: not priced, counts zero).
        budget: the batch's budget; None admits everything.
    """
    admitted: list[int] = []
    planned = 0.0
    stop: str | None = None
    for index, cost in enumerate(costs):
        price = cost or 0.0
        if stop is None and over_budget(planned + price, budget):
            stop = (
                f"budget: {format_units(planned + price, unit=True)} with this clip would pass the budget "
                f"of {format_units(budget, unit=True)} ({format_units(planned, unit=True)} already planned)"
            )
        if stop is not None:
            continue
        planned += price
        admitted.append(index)
    return BudgetPlan(admitted=admitted, planned=planned, stop=stop)


__all__ = ["TOLERANCE", "BudgetPlan", "check_budget", "over_budget", "plan_within_budget"]
