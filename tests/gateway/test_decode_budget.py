"""The image checks' memory budget: checks run while their summed cost fits, the others wait, and
a check larger than the whole budget runs alone."""

from __future__ import annotations

import asyncio

from gateway.http.decode_budget import DecodeBudget
from tests.gateway.test_job_store import async_test


async def run_all(budget: DecodeBudget, costs: list[int]) -> int:
    """Run a check of each cost at once; the most memory held at any moment."""
    peak = 0

    async def check(cost: int) -> None:
        nonlocal peak
        async with budget.reserve(cost):
            peak = max(peak, budget.held)
            await asyncio.sleep(0.01)

    await asyncio.gather(*(check(cost) for cost in costs))
    return peak


@async_test
async def test_checks_wait_while_the_budget_is_spent() -> None:
    budget = DecodeBudget(100)
    assert await run_all(budget, [60, 60, 60, 30]) == 90
    assert budget.held == 0


@async_test
async def test_a_check_over_the_whole_budget_runs_alone() -> None:
    budget = DecodeBudget(100)
    assert await run_all(budget, [500, 10, 10]) == 100
    assert budget.held == 0


@async_test
async def test_a_failed_check_gives_its_memory_back() -> None:
    budget = DecodeBudget(100)
    try:
        async with budget.reserve(80):
            raise ValueError("corrupt")
    except ValueError:
        pass
    assert budget.held == 0
    assert await run_all(budget, [80]) == 80
