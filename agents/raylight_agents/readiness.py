"""Readiness checks that answer within a budget (a replica's `/readyz` answers within a second while what it
depends on restarts: the model endpoint, the store actor, the thread store).

A `Probe` runs its check at most once at a time, in the background; a call waits for it at most `budget_s`.
A check that finishes records its answer; a call whose check has not finished in time answers with the last
recorded answer while it is younger than `max_age_s` (saying so), else "not ready: no answer within the
budget". A check that hangs therefore never holds a readiness probe, and never piles up behind itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

Check = Callable[[], Awaitable[tuple[bool, str]]]

PROBE_BUDGET_S = 0.3  # a gateway gives an agent's readyz 0.4 s (raylight.local.gateway.AGENT_READY_TIMEOUT_S)
PROBE_MAX_AGE_S = 10.0


class Probe:
    """One readiness check (`check() -> (ok, reason)`) answered within `budget_s` seconds (see the module)."""

    def __init__(self, check: Check, budget_s: float = PROBE_BUDGET_S, max_age_s: float = PROBE_MAX_AGE_S) -> None:
        if budget_s <= 0:
            raise ValueError(f"budget_s: must be positive, got {budget_s}")
        self.check, self.budget_s, self.max_age_s = check, budget_s, max_age_s
        self.last: tuple[bool, str] | None = None
        self.last_at = 0.0
        self._running: asyncio.Future[tuple[bool, str]] | None = None

    def _record(self, done: asyncio.Future[tuple[bool, str]]) -> None:
        if done.cancelled():
            return
        exc = done.exception()
        self.last = (False, f"the check failed: {type(exc).__name__}") if exc else done.result()
        self.last_at = time.monotonic()

    async def __call__(self) -> tuple[bool, str]:
        if self._running is None or self._running.done():
            self._running = asyncio.ensure_future(self.check())
            self._running.add_done_callback(self._record)
        try:
            await asyncio.wait_for(asyncio.shield(self._running), self.budget_s)
        except TimeoutError:
            age = time.monotonic() - self.last_at
            if self.last is not None and age <= self.max_age_s:
                ok, reason = self.last
                return ok, f"{reason} (checked {age:.1f} s ago; a new check has not answered yet)"
            return False, f"no answer within {self.budget_s:g} s"
        except Exception:
            pass  # recorded by _record
        assert self.last is not None
        return self.last
