"""What the runs service reads from a user's server, validated as untrusted input.

Why: the user owns their ``runs`` server and everything in ``~/runs/<id>/``. A notebook (or
the user in a terminal) can rewrite ``status.json`` with anything: ``"cell": "not-a-number"``,
numbers too large for the database, 50 MB, a symlink to some other file. Before this module
the service converted such values with ``int()``/``float()`` inside the tick shared by all
users, so one bad file stopped every user's queue. Now a status is parsed here into a bounded
:class:`ExecutorStatus`; anything else raises :class:`BadStatus` with a reason that names the
field but never echoes the content, and the dispatcher fails only that run.
"""

from __future__ import annotations

import json
import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

#: most bytes of a server's answer read for a status file (the executor writes < 30 KiB)
STATUS_MAX_BYTES = 256 * 1024
#: longest message / exception value kept from a status (the executor truncates to this)
TEXT_MAX = 8000
_COUNT_MAX = 10_000_000  # cells of a notebook, far above any real one
_PID_MAX = 2**31 - 1
_TIME_MAX = 1e11  # seconds since 1970: the year 5138


class BadStatus(ValueError):
    """A status file that is not what the executor writes (the run is failed, not retried)."""


class ErrorCell(BaseModel):
    model_config = ConfigDict(extra="ignore")
    cell: int | None = Field(None, ge=0, le=_COUNT_MAX)
    exec_count: int | None = Field(None, ge=0, le=_COUNT_MAX)
    ename: str = Field("", max_length=200)
    evalue: str = Field("", max_length=TEXT_MAX)


class ExecutorStatus(BaseModel):
    """``status.json`` as written by :mod:`.executor`, with bounds on every field."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)
    state: Literal["running", "succeeded", "failed", "cancelled", "timeout"] = "running"
    pid: int | None = Field(None, ge=0, le=_PID_MAX)
    started: float | None = Field(None, ge=0, le=_TIME_MAX)
    heartbeat: float = Field(0.0, ge=0, le=_TIME_MAX)
    finished: float | None = Field(None, ge=0, le=_TIME_MAX)
    cell: int = Field(0, ge=0, le=_COUNT_MAX)
    cells: int = Field(0, ge=0, le=_COUNT_MAX)
    error: ErrorCell | None = None
    message: str = Field("", max_length=TEXT_MAX)


def parse_status(text: str) -> ExecutorStatus:
    """Parse a status file's text; :class:`BadStatus` says what is wrong (not the content)."""
    if len(text) > STATUS_MAX_BYTES:
        raise BadStatus(f"it is larger than {STATUS_MAX_BYTES} bytes")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise BadStatus(f"it is not JSON ({_short(exc)})") from None
    if not isinstance(data, dict):
        raise BadStatus(f"it is a JSON {type(data).__name__}, not an object")
    try:
        return ExecutorStatus.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'status'}: {e['msg']}"
            for e in exc.errors(include_input=False, include_url=False)[:5]
        )
        raise BadStatus(problems) from None
    except (ValueError, RecursionError, OverflowError) as exc:
        raise BadStatus(_short(exc)) from None


def plausible_finish(status: ExecutorStatus, now: float) -> float:
    """The run's end time: the status's own when it is plausible, else ``now``."""
    t = status.finished
    return t if t is not None and math.isfinite(t) and t <= now + 60 else now


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
