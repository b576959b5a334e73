"""Quotas that a flood of distinct callers cannot reset (issue 31 item 8): the bucket table stays bounded and
eviction drops the full (idle) buckets first, then the fullest, so a caller who spent her budget keeps it spent."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from raylight.api.types import Limits
from raylight_agents import quota as quota_module
from raylight_agents.quota import MAX_CALLERS, Quota
from raylight_pipelines.web.errors import ApiError


def test_a_spent_caller_stays_refused_after_100000_distinct_callers_and_memory_stays_bounded() -> None:
    now = [0.0]
    quota = Quota("p", Limits.model_validate({"requestsPerMinute": 2}), clock=lambda: now[0])
    quota.admit("alice", None)
    quota.admit("alice", None)
    for i in range(100_000):
        quota.admit(f"flood-{i}", None)
    assert len(quota._requests) <= MAX_CALLERS
    with pytest.raises(ApiError) as exc:
        quota.admit("alice", None)
    assert exc.value.status == 429 and exc.value.type == "requests"


def test_a_caller_over_the_token_budget_stays_refused_through_a_flood() -> None:
    now = [0.0]
    quota = Quota("p", Limits.model_validate({"tokensPerMinute": 600}), clock=lambda: now[0])
    quota.admit("bob", None)
    quota.spend("bob", None, 900)
    for i in range(100_000):
        quota.admit(f"flood-{i}", None)
        quota.spend(f"flood-{i}", None, 1)
    assert len(quota._tokens) <= MAX_CALLERS
    with pytest.raises(ApiError) as exc:
        quota.admit("bob", None)
    assert exc.value.type == "tokens"


def test_full_buckets_are_dropped_before_any_partly_spent_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(quota_module, "MAX_CALLERS", 10)
    now = [0.0]
    quota = Quota("p", Limits.model_validate({"requestsPerMinute": 60}), clock=lambda: now[0])
    for i in range(5):
        quota.admit(f"spent-{i}", None)  # 59 of 60 left, refills 1 a second
    now[0] = 1.5
    for i in range(5):
        quota.admit(f"idle-{i}", None)
    now[0] = 2.0  # the first five are full again, the last five are not
    quota.admit("new", None)
    assert set(quota._requests) == {f"idle-{i}" for i in range(5)} | {"new"}


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 10_000), max_size=300, unique=True), st.integers(0, 300))
def test_no_order_of_other_callers_gives_a_spent_caller_budget_back(flood: list[int], at: int) -> None:
    """With the clock standing still (nothing refills), a caller who spent her budget is refused whatever
    distinct callers (one request each) come before and after her, in a table far smaller than the flood."""
    original = quota_module.MAX_CALLERS
    quota_module.MAX_CALLERS = 8
    try:
        quota = Quota("p", Limits.model_validate({"requestsPerMinute": 2}), clock=lambda: 0.0)
        callers = [f"c{n}" for n in flood]
        callers.insert(min(at, len(callers)), "victim")
        for caller in callers:
            if caller == "victim":
                quota.admit("victim", None)
                quota.admit("victim", None)
                continue
            with contextlib.suppress(ApiError):
                quota.admit(caller, None)
            assert len(quota._requests) <= 8
        with pytest.raises(ApiError):
            quota.admit("victim", None)
    finally:
        quota_module.MAX_CALLERS = original
