"""A readiness check answers within its budget whatever hangs, says when it answers from an earlier check,
runs one check at a time, and records a check that finishes after the caller stopped waiting."""

from __future__ import annotations

import asyncio
import time

import pytest
from raylight_agents.readiness import Probe


class Check:
    def __init__(self) -> None:
        self.calls = 0
        self.hang = False
        self.release = asyncio.Event()
        self.answer = (True, "the vector store answers")

    async def __call__(self) -> tuple[bool, str]:
        self.calls += 1
        if self.hang:
            await self.release.wait()
        return self.answer


def test_a_hanging_check_with_no_earlier_answer_is_not_ready_within_the_budget() -> None:
    async def run() -> None:
        check = Check()
        check.hang = True
        probe = Probe(check, budget_s=0.2)
        for _ in range(3):
            t0 = time.monotonic()
            ok, reason = await probe()
            assert not ok and reason == "no answer within 0.2 s" and time.monotonic() - t0 < 0.5
        assert check.calls == 1  # one check at a time, however often it is asked
        check.release.set()
        await asyncio.sleep(0.01)
        assert probe.last == (True, "the vector store answers")  # recorded though nobody waited for it
        assert await probe() == (True, "the vector store answers")
        assert check.calls == 2

    asyncio.run(run())


def test_a_hanging_check_answers_from_the_last_check_while_it_is_young_and_says_so() -> None:
    async def run() -> None:
        check = Check()
        probe = Probe(check, budget_s=0.2, max_age_s=30)
        assert await probe() == (True, "the vector store answers")
        check.hang = True
        ok, reason = await probe()
        assert ok and reason.startswith("the vector store answers (checked ") and "has not answered yet" in reason
        probe.max_age_s = 0.0
        ok, reason = await probe()
        assert not ok and reason == "no answer within 0.2 s"
        check.release.set()

    asyncio.run(run())


def test_a_check_that_raises_is_not_ready_naming_the_error() -> None:
    async def boom() -> tuple[bool, str]:
        raise ConnectionError("refused")

    assert asyncio.run(Probe(boom)()) == (False, "the check failed: ConnectionError")


def test_a_budget_must_be_positive() -> None:
    with pytest.raises(ValueError, match="budget_s"):
        Probe(Check(), budget_s=0)
