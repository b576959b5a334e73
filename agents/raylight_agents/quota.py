"""Per-caller rate limits of a Pipeline's agent (`agent.limits.requestsPerMinute`, `tokensPerMinute`, `per`).

Token buckets, one per caller (the user id, or the tenant with `per: tenant`; callers without one share the
budget of the anonymous caller), refilled continuously: `requestsPerMinute` requests and `tokensPerMinute`
model tokens a minute, with a minute's worth as the burst. A request is admitted while both buckets hold
something; its model tokens are taken from the token bucket when it ends (a bucket may go below zero: the
caller then waits until it refills). Refusals are 429 in the OpenAI shape with `Retry-After` in whole seconds,
counted in `raylight_agent_quota_rejections_total`. The buckets live in the replica: with N replicas a caller
may get up to N times the limit.
"""

from __future__ import annotations

import heapq
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from raylight.api.types import Limits
from raylight_pipelines import telemetry
from raylight_pipelines.web.errors import ApiError

MAX_CALLERS = 100_000  # buckets kept per limit; past this the fullest ones are dropped first
EVICT_FRACTION = 0.1  # share of MAX_CALLERS freed by one eviction sweep (amortises the sweep's O(n log n))


@dataclass
class _Bucket:
    level: float
    at: float

    def refill(self, capacity: float, now: float) -> None:
        self.level = min(capacity, self.level + (now - self.at) * capacity / 60.0)
        self.at = now

    def level_at(self, capacity: float, now: float) -> float:
        """The level the bucket would hold at `now` (refilled, capped at `capacity`), without changing it."""
        return min(capacity, self.level + (now - self.at) * capacity / 60.0)

    def wait(self, capacity: float) -> float:
        """Seconds until the bucket holds at least one unit."""
        return max(0.0, (1.0 - self.level) * 60.0 / capacity)


def _evict(buckets: dict[str, _Bucket], capacity: float, now: float) -> None:
    """Free room in a full bucket table without giving anyone budget back.

    A bucket that has refilled to `capacity` is the same as a new one, so every full bucket goes first (no
    caller gains anything). If that frees less than `EVICT_FRACTION` of `MAX_CALLERS`, the fullest of the rest
    go next: a dropped bucket comes back full, so dropping the fullest gives the least budget back, and the
    callers who spent theirs (the lowest levels) are kept longest. A flood of distinct callers therefore
    cannot reset a spent caller's budget; memory stays at `MAX_CALLERS` buckets. Only when every bucket in
    the table is as spent as hers (`MAX_CALLERS` callers who each spent all of theirs within the refill time)
    can one of them, the earliest seen, be dropped.
    """
    full = [key for key, bucket in buckets.items() if bucket.level_at(capacity, now) >= capacity]
    for key in full:
        del buckets[key]
    want = max(1, int(MAX_CALLERS * EVICT_FRACTION)) - len(full)
    if want > 0:
        fullest = heapq.nlargest(want, buckets.items(), key=lambda item: item[1].level_at(capacity, now))
        for key, _ in fullest:
            del buckets[key]


class Quota:
    def __init__(self, pipeline: str, limits: Limits, clock: Callable[[], float] = time.monotonic) -> None:
        self.pipeline = pipeline
        self.rpm = limits.requests_per_minute
        self.tpm = limits.tokens_per_minute
        self.per = limits.per
        self.clock = clock
        self._requests: dict[str, _Bucket] = {}
        self._tokens: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.rpm is not None or self.tpm is not None

    def key(self, user: str | None, tenant: str | None) -> str:
        return (tenant if self.per == "tenant" else user) or ""

    def _bucket(self, buckets: dict[str, _Bucket], key: str, capacity: float, now: float) -> _Bucket:
        bucket = buckets.get(key)
        if bucket is None:
            if len(buckets) >= MAX_CALLERS:
                _evict(buckets, capacity, now)
            bucket = buckets[key] = _Bucket(capacity, now)
        bucket.refill(capacity, now)
        return bucket

    def admit(self, user: str | None, tenant: str | None) -> None:
        """Take one request from the caller's budget, or raise 429 (with Retry-After)."""
        if not self.enabled:
            return
        key, now = self.key(user, tenant), self.clock()
        with self._lock:
            if self.tpm is not None:
                tokens = self._bucket(self._tokens, key, self.tpm, now)
                if tokens.level < 1.0:
                    self._refuse("tokens", tokens.wait(self.tpm), f"{self.tpm} tokens per minute")
            if self.rpm is not None:
                requests = self._bucket(self._requests, key, self.rpm, now)
                if requests.level < 1.0:
                    self._refuse("requests", requests.wait(self.rpm), f"{self.rpm} requests per minute")
                requests.level -= 1.0

    def spend(self, user: str | None, tenant: str | None, tokens: int) -> None:
        """Take the model tokens a finished request used from the caller's token budget."""
        if self.tpm is None or tokens <= 0:
            return
        key, now = self.key(user, tenant), self.clock()
        with self._lock:
            self._bucket(self._tokens, key, self.tpm, now).level -= tokens

    def _refuse(self, limit: str, wait: float, what: str) -> None:
        telemetry.AGENT_QUOTA_REJECTIONS.labels(self.pipeline, limit).inc()
        seconds = max(1, math.ceil(wait))
        who = "tenant" if self.per == "tenant" else "user"
        raise ApiError(429, f"Rate limit reached for pipeline {self.pipeline}: {what} per {who}; retry in "
                       f"{seconds} s.", type=limit, code="rate_limit_exceeded", retry_after=seconds)
