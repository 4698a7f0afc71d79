"""Which cron expressions a schedule may use, and when a schedule fires next.

Why: croniter accepts expressions that never fire (``0 0 31 2 *``: February 31st) and then
raises when asked for the next date, which was a 500 with a traceback at submission and would
stop the dispatcher's tick at every firing; and it accepts one firing per second
(``* * * * * *``), 50 schedules per user. A schedule must fire at least once in the next year
and never twice within ``runs.min_schedule_interval`` seconds.

The smallest gap between two firings is computed from the expanded fields, not by iterating
firings (a per-second schedule has 31 million a year): seconds S within a minute, minutes M
within an hour, hours H within a day, then the gap in days between matching days (found by
croniter at day resolution over one year, so ``L``, ``#`` and the day-of-month/day-of-week
OR of cron stay croniter's). With ``d(X)`` the smallest step between values of X and
``span(X)`` = max - min, the gap at each level is ``min(d(X), period * gap_above - span(X))``.
"""

from __future__ import annotations

import math
import time
from datetime import date, datetime

from croniter import croniter

YEAR = 366 * 86400
#: next_fire of a schedule whose expression no longer fires (9999-12-31): it stays listed
NEVER = 253402300799.0


class CronRefused(ValueError):
    """An expression a schedule may not use; the message says why."""


def next_fire(cron: str, after: float) -> float:
    """The next firing after ``after`` (local time); :data:`NEVER` when none within a year."""
    try:
        return croniter(cron, datetime.fromtimestamp(after), max_years_between_matches=1).get_next(
            float
        )
    except (ValueError, KeyError, OverflowError):  # CroniterBadDateError is a ValueError
        return NEVER


def _values(field: list, low: int, high: int) -> list[int]:
    if field == ["*"] or "*" in field:
        return list(range(low, high + 1))
    return sorted({int(v) for v in field})


def _step(values: list[int]) -> float:
    return min((b - a for a, b in zip(values, values[1:], strict=False)), default=math.inf)


def _day_gap(fields: list[str], start: float) -> float:
    """Smallest gap in days between matching days over the next year (inf: one or none)."""
    dom, month, dow = fields[2], fields[3], fields[4]
    if dom == "*" and dow == "*":
        return 1.0  # every day of the allowed months: consecutive days exist
    expr = f"0 0 {dom} {month} {dow}" + (f" 0 {fields[6]}" if len(fields) == 7 else "")
    it = croniter(expr, datetime.fromtimestamp(start - 86400), max_years_between_matches=1)
    days: list[int] = []
    end = date.fromtimestamp(start + YEAR).toordinal()
    for _ in range(400):
        try:
            day = date.fromtimestamp(it.get_next(float)).toordinal()
        except (ValueError, KeyError, OverflowError):
            break
        if day > end:
            break
        days.append(day)
    return _step(days)


def smallest_interval(cron: str, now: float | None = None) -> float:
    """The smallest number of seconds between two firings of ``cron``."""
    now = time.time() if now is None else now
    c = croniter(cron)
    fields = [str(f) for f in c.expressions]
    exp = c.expanded
    seconds = _values(exp[5], 0, 59) if len(exp) >= 6 else [0]
    minutes, hours = _values(exp[0], 0, 59), _values(exp[1], 0, 23)
    g_days = _day_gap(fields, now)
    g_hours = min(_step(hours), 24 * g_days - (hours[-1] - hours[0]))
    g_minutes = min(_step(minutes), 60 * g_hours - (minutes[-1] - minutes[0]))
    return min(_step(seconds), 60 * g_minutes - (seconds[-1] - seconds[0]))


def check_schedule(cron: str, min_interval: float, now: float | None = None) -> float:
    """The first firing of ``cron`` after ``now``, or :class:`CronRefused` saying why not."""
    now = time.time() if now is None else now
    try:
        valid = croniter.is_valid(cron)
    except Exception:  # noqa: BLE001 (croniter raises several kinds for odd input)
        valid = False
    if not valid:
        raise CronRefused(f"not a valid cron expression: {cron!r}")
    first = next_fire(cron, now)
    if first == NEVER or first > now + YEAR:
        raise CronRefused(
            f"the cron expression {cron!r} does not fire within the next year (it names a "
            "day that never comes, such as February 30th, or one too far away): a schedule "
            "must fire at least once a year"
        )
    try:
        gap = smallest_interval(cron, now)
    except (ValueError, KeyError, IndexError, OverflowError) as exc:
        raise CronRefused(f"cannot work out how often {cron!r} fires: {exc}") from None
    if gap < min_interval:
        raise CronRefused(
            f"the cron expression {cron!r} fires every {gap:g} s at times; schedules may fire "
            f"at most once every {min_interval:g} s (runs.min_schedule_interval)"
        )
    return first
