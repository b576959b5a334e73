"""Cron schedules exactly as a Kubernetes CronJob accepts them.

The API server parses `spec.schedule` with robfig/cron v3's standard parser (`cron.ParseStandard`): five
fields (minute hour day-of-month month day-of-week) or a descriptor, and since Kubernetes 1.27 it refuses
`TZ=`/`CRON_TZ=` prefixes (use `spec.timeZone`). This module mirrors that grammar: general cron libraries
accept dialects the API server refuses (seconds or year fields, `L`, `W`, `#`), so they cannot say whether
`kubectl apply` of the CronJob would succeed.
"""

from __future__ import annotations

DESCRIPTORS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
_MONTHS = {m: i + 1 for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"))}
_DAYS = {d: i for i, d in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
# (name, lowest, highest, names)
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}), ("hour", 0, 23, {}), ("day of month", 1, 31, {}),
    ("month", 1, 12, _MONTHS), ("day of week", 0, 6, _DAYS),
)


def _number(text: str, names: dict[str, int], field: str) -> int:
    if text.lower() in names:
        return names[text.lower()]
    if not text.isascii() or not text.isdigit():
        raise ValueError(f"{field}: {text!r} is not a number" + (f" or a name ({', '.join(names)})" if names else ""))
    return int(text)


def _check_range(expr: str, field: str, low: int, high: int, names: dict[str, int]) -> None:
    range_part, *step = expr.split("/")
    if len(step) > 1:
        raise ValueError(f"{field}: too many slashes in {expr!r}")
    if range_part in ("*", "?"):
        start, end = low, high
    else:
        bounds = range_part.split("-")
        if len(bounds) > 2:
            raise ValueError(f"{field}: too many hyphens in {expr!r}")
        start = _number(bounds[0], names, field)
        end = _number(bounds[1], names, field) if len(bounds) == 2 else start
        if step and len(bounds) == 1:
            end = high  # robfig: `N/step` runs from N to the field's end
    if step and (not step[0].isascii() or not step[0].isdigit() or int(step[0]) == 0):
        raise ValueError(f"{field}: the step in {expr!r} must be a positive number")
    if start < low or end > high:
        raise ValueError(f"{field}: {expr!r} is outside {low}-{high}")
    if start > end:
        raise ValueError(f"{field}: {expr!r} starts after it ends")


def schedule_problem(schedule: str) -> str | None:
    """None when a CronJob accepts `schedule`, else why not."""
    text = schedule.strip()
    if not text:
        return "must not be empty"
    if "TZ" in text:
        return "TZ= and CRON_TZ= are not accepted by Kubernetes CronJobs (since 1.27); schedules run in UTC"
    if text.startswith("@"):
        if text in DESCRIPTORS:
            return None
        return f"unknown descriptor {text!r}; one of {', '.join(DESCRIPTORS)}, or five fields"
    parts = text.split()
    if len(parts) != 5:
        return f"expected exactly 5 fields (minute hour day-of-month month day-of-week), found {len(parts)}"
    try:
        for part, (field, low, high, names) in zip(parts, _FIELDS, strict=True):
            for expr in part.split(","):
                _check_range(expr, field, low, high, names)
    except ValueError as exc:
        return str(exc)
    return None


def check_schedule(schedule: str) -> str:
    """A pydantic validator: the schedule, or ValueError saying why a CronJob refuses it."""
    problem = schedule_problem(schedule)
    if problem:
        raise ValueError(f"not a Kubernetes CronJob schedule: {problem}")
    return schedule
