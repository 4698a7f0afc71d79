"""The runs service's limits, cron rules and untrusted-input parsing as properties over many
inputs (the hand-picked hostile cases are in test_untrusted_input.py next to this file).

Each property states what the service promises: the sweep size checked before expanding is
the number of runs the expansion makes; the rate limiter never lets more than its limit
through in any minute and never refuses below it; the smallest interval of a cron expression
is the smallest gap between its firings (compared with an independent calendar walk); a
status file, whatever it holds, is either a bounded status or a BadStatus, never a crash.
"""

from __future__ import annotations

import json
import math
from datetime import date, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from cscale_extensions.services.runs.cronrules import CronRefused, check_schedule, smallest_interval
from cscale_extensions.services.runs.limits import WINDOW, SubmissionRate, json_size, sweep_size
from cscale_extensions.services.runs.models import SweepRequest
from cscale_extensions.services.runs.untrusted import (
    TEXT_MAX,
    BadStatus,
    ExecutorStatus,
    parse_status,
    plausible_finish,
)

NOTEBOOK = {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": []}
scalar = st.none() | st.booleans() | st.integers(-10, 10) | st.text(max_size=3)


# --------------------------------------------------------------------------- sweeps


@settings(max_examples=60, deadline=None)
@given(
    sets=st.none()
    | st.lists(st.dictionaries(st.text(min_size=1, max_size=3), scalar, max_size=2), max_size=4),
    grid=st.none()
    | st.dictionaries(st.text(min_size=1, max_size=3), st.lists(scalar, max_size=4), max_size=3),
)
def test_sweep_size_is_the_number_of_runs_the_sweep_expands_to(sets, grid):
    req = SweepRequest(notebook=NOTEBOOK, parameter_sets=sets, grid=grid)
    try:
        runs = len(req.expand())
    except ValueError:  # an empty sweep is refused (422) after the size check
        runs = 0
    assert sweep_size(sets, grid) == runs


def test_json_size_counts_the_bytes_a_value_takes_as_compact_json():
    value = {"a": [1, 2.5, "é"], "b": None}
    assert json_size(value) == len(json.dumps(value, separators=(",", ":")))
    assert json_size({"x": "y" * 1000}) > 1000


# --------------------------------------------------------------------------- rate


@settings(max_examples=100, deadline=None)
@given(
    limit=st.integers(1, 5),
    events=st.lists(st.tuples(st.sampled_from(["eve", "bob"]), st.floats(0, 40)), max_size=40),
)
def test_the_rate_limit_holds_in_every_minute_and_refuses_only_at_the_limit(limit, events):
    now = [1000.0]
    rate = SubmissionRate(limit, clock=lambda: now[0])
    accepted: dict[str, list[float]] = {"eve": [], "bob": []}
    for user, step in events:
        now[0] += step
        recent = [t for t in accepted[user] if now[0] - t < WINDOW]
        wait = rate.check(user)
        if wait == 0:
            accepted[user].append(now[0])
            assert len(recent) < limit
        else:
            assert len(recent) == limit, "refused below the limit"
            # the wait ends when the oldest submission of the window leaves it
            assert wait >= 1 and now[0] + wait >= min(recent) + WINDOW - 1e-6
    for times in accepted.values():
        for t in times:
            assert sum(1 for u in times if t <= u < t + WINDOW) <= limit


# --------------------------------------------------------------------------- cron


def _field(values: list[int], star: bool) -> str:
    return "*" if star else ",".join(str(v) for v in values)


cron_parts = st.tuples(
    st.lists(st.integers(0, 59), min_size=1, max_size=3, unique=True),
    st.lists(st.integers(0, 23), min_size=1, max_size=3, unique=True),
    st.booleans(),  # every hour
    st.lists(st.integers(1, 28), min_size=1, max_size=3, unique=True),
    st.booleans(),  # every day of the month
    st.lists(st.integers(0, 6), min_size=1, max_size=3, unique=True),
    st.booleans(),  # every day of the week
)


def _walk(minutes, hours, doms, dows, start: float) -> float:
    """The smallest gap between firings over the year from ``start``, found by walking the
    calendar day by day (cron: when both day fields are restricted, either one matches)."""
    first = date.fromtimestamp(start)
    firings: list[float] = []
    for k in range(367):
        day = first + timedelta(days=k)
        by_dom = doms is not None and day.day in doms
        by_dow = dows is not None and (day.weekday() + 1) % 7 in dows
        if doms is None and dows is None:
            ok = True
        elif doms is None or dows is None:
            ok = by_dom if dows is None else by_dow
        else:
            ok = by_dom or by_dow
        if ok:
            midnight = day.toordinal() * 86400  # wall-clock time, as cron counts it
            firings += [midnight + 3600 * h + 60 * m for h in hours for m in minutes]
    firings.sort()
    return min((b - a for a, b in zip(firings, firings[1:], strict=False)), default=math.inf)


@settings(max_examples=40, deadline=None)
@given(parts=cron_parts)
def test_smallest_interval_is_the_smallest_gap_between_firings(parts):
    minutes, hours, every_hour, doms, every_dom, dows, every_dow = parts
    cron = " ".join(
        [
            _field(minutes, False),
            _field(hours, every_hour),
            _field(doms, every_dom),
            "*",
            _field(dows, every_dow),
        ]
    )
    now = datetime(2027, 3, 1, 12, 0).timestamp()
    want = _walk(
        sorted(minutes),
        list(range(24)) if every_hour else sorted(hours),
        None if every_dom else set(doms),
        None if every_dow else set(dows),
        now,
    )
    assert smallest_interval(cron, now) == want, cron
    try:
        check_schedule(cron, 3600, now)
        assert want >= 3600
    except CronRefused as exc:
        assert want < 3600 and "runs.min_schedule_interval" in str(exc)


# --------------------------------------------------------------------------- status files

json_doc = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=10,
)
status_like = st.fixed_dictionaries(
    {},
    optional={
        "state": st.sampled_from(["running", "succeeded", "failed", "queued"]) | json_doc,
        "pid": st.integers(-5, 2**40) | json_doc,
        "heartbeat": st.floats() | json_doc,
        "finished": st.floats(-1, 2e11) | json_doc,
        "cell": st.integers(-1, 2 * 10**7) | json_doc,
        "cells": st.integers(-1, 2 * 10**7),
        "error": st.none()
        | st.fixed_dictionaries({}, optional={"cell": json_doc, "ename": json_doc}),
        "message": st.text(max_size=30) | json_doc,
    },
)


@settings(max_examples=100, deadline=None)
@given(doc=status_like | json_doc)
def test_any_status_file_is_a_bounded_status_or_bad_status_never_a_crash(doc):
    try:
        text = json.dumps(doc)
    except ValueError:
        return
    try:
        status = parse_status(text)
    except BadStatus as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 2000
        return
    assert isinstance(status, ExecutorStatus)
    assert 0 <= status.cell <= 10**7 and 0 <= status.cells <= 10**7
    assert status.pid is None or 0 <= status.pid < 2**31
    assert all(math.isfinite(t) for t in (status.heartbeat, status.finished or 0))
    assert len(status.message) <= TEXT_MAX


def test_a_run_cannot_claim_to_finish_in_the_future():
    now = 1.7e9
    assert plausible_finish(parse_status(json.dumps({"finished": now - 5})), now) == now - 5
    assert plausible_finish(parse_status(json.dumps({"finished": now + 86400})), now) == now
    assert plausible_finish(parse_status("{}"), now) == now
