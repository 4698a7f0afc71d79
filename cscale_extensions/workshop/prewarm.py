"""Start a cohort's servers ahead of time at a safe rate, with retries.

At most ``parallel`` spawns are pending at once (never more than the hub's
concurrent_spawn_limit, so nobody arriving meanwhile is refused by the hub for our sake); a
refused spawn (HTTP 429) waits and is tried again without counting as an attempt; a failed
one is retried ``retries`` times after ``retry_delay`` seconds.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from cscale_extensions.workshop.hubapi import HubAPI


def failure_reason(api: HubAPI, name: str) -> str | None:
    """The hub's message for ``name``'s last failed spawn (from the progress API), if any."""
    try:
        r = api.s.get(f"{api.base}users/{quote(name)}/server/progress", stream=True, timeout=5)
    except Exception:
        return None
    try:
        if r.status_code != 200:
            return None
        for line in r.iter_lines(decode_unicode=True):
            if line and line.startswith("data:"):
                event = json.loads(line[5:])
                return event.get("message") if event.get("failed") else None
    except Exception:
        return None
    finally:
        r.close()
    return None


def _server(api: HubAPI, name: str) -> dict[str, Any] | None:
    model = api.user(name) or {}
    return model.get("servers", {}).get("")


def prewarm(
    api: HubAPI,
    users: list[str],
    *,
    parallel: int = 4,
    retries: int = 2,
    retry_delay: float = 5,
    timeout: float = 300,
    log: Callable[[str], None] = print,
) -> dict[str, dict[str, Any]]:
    """Start every user's default server; returns ``{user: {state, attempts, seconds, error}}``
    where state is ``ready`` or ``failed``."""
    api.ensure_users(users)
    result: dict[str, dict[str, Any]] = {
        u: {"state": "queued", "attempts": 0, "seconds": None, "error": None} for u in users
    }
    queue: list[tuple[float, str]] = [(0.0, u) for u in users]  # (not before, user)
    inflight: dict[str, float] = {}
    t0 = time.monotonic()
    while queue or inflight:
        now = time.monotonic()
        for name, started in list(inflight.items()):
            server = _server(api, name)
            r = result[name]
            if server and server.get("ready"):
                r.update(state="ready", seconds=round(now - started, 2), error=None)
                del inflight[name]
                log(f"  {name}: ready after {r['seconds']:.1f}s")
            elif not server or not server.get("pending"):
                reason = failure_reason(api, name) or "the server stopped while starting"
                del inflight[name]
                _fail(r, name, reason, retries, queue, now + retry_delay, log)
            elif now - started > timeout:
                api.stop(name)
                del inflight[name]
                _fail(
                    r,
                    name,
                    f"not ready within {timeout:.0f}s",
                    retries,
                    queue,
                    now + retry_delay,
                    log,
                )
        queue.sort()
        while queue and len(inflight) < parallel and queue[0][0] <= now:
            _, name = queue.pop(0)
            r = result[name]
            code, message = api.spawn(name)
            if code == 429:  # the hub's concurrent_spawn_limit: not an attempt, just later
                queue.append((now + retry_delay, name))
                continue
            r["attempts"] += 1
            if code in (201, 202, 400):
                server = _server(api, name)
                if server and server.get("ready"):
                    r.update(
                        state="ready",
                        seconds=0.0 if code == 400 else round(time.monotonic() - now, 2),
                    )
                    log(f"  {name}: {'already running' if code == 400 else 'ready'}")
                    continue
                inflight[name] = now
                r["state"] = "starting"
            else:
                _fail(
                    r,
                    name,
                    message or failure_reason(api, name) or f"the hub answered HTTP {code}",
                    retries,
                    queue,
                    now + retry_delay,
                    log,
                )
        if queue or inflight:
            time.sleep(0.5)
    ready = sum(1 for r in result.values() if r["state"] == "ready")
    log(f"prewarm: {ready}/{len(users)} ready in {time.monotonic() - t0:.1f}s")
    return result


def _fail(
    r: dict[str, Any],
    name: str,
    reason: str,
    retries: int,
    queue: list,
    when: float,
    log: Callable[[str], None],
) -> None:
    r["error"] = reason
    if r["attempts"] <= retries:
        r["state"] = "retrying"
        queue.append((when, name))
        log(f"  {name}: failed ({reason}); will retry")
    else:
        r["state"] = "failed"
        log(f"  {name}: FAILED after {r['attempts']} attempt(s): {reason}")
