"""Who of a cohort has logged in, whose server is ready, starting or failed, and why."""

from __future__ import annotations

from typing import Any

from cscale_extensions.workshop.hubapi import HubAPI
from cscale_extensions.workshop.model import Workshop
from cscale_extensions.workshop.prewarm import failure_reason


def cohort_status(
    api: HubAPI, ws: Workshop, disabled: set[str] | None = None
) -> list[dict[str, Any]]:
    """One row per participant: logged_in, server (ready/starting/stopping/none/failed), reason."""
    rows = []
    for name in ws.users:
        model = api.user(name)
        row: dict[str, Any] = {
            "user": name,
            "logged_in": False,
            "server": "none",
            "reason": "",
            "last_activity": None,
            "disabled": name in (disabled or set()),
        }
        if model is None:
            row["reason"] = "never logged in, not prewarmed"
            rows.append(row)
            continue
        # auth_state is only set by a real login (prewarming creates the user without one)
        row["logged_in"] = bool(model.get("auth_state"))
        row["last_activity"] = model.get("last_activity")
        server = model.get("servers", {}).get("")
        if server:
            if server.get("ready"):
                row["server"] = "ready"
            else:
                row["server"] = {"spawn": "starting", "stop": "stopping"}.get(
                    server.get("pending"), "starting"
                )
        else:
            reason = failure_reason(api, name)
            if reason:
                row.update(server="failed", reason=reason)
            elif (pw := ws.prewarm.get(name)) and pw.get("state") == "failed":
                row.update(server="failed", reason=f"prewarm: {pw.get('error')}")
        rows.append(row)
    return rows


def summary(rows: list[dict[str, Any]]) -> str:
    count = {
        k: sum(1 for r in rows if r["server"] == k) for k in ("ready", "starting", "failed", "none")
    }
    logged = sum(1 for r in rows if r["logged_in"])
    return (
        f"{len(rows)} participants: {logged} logged in; servers {count['ready']} ready, "
        f"{count['starting']} starting, {count['failed']} failed, {count['none']} not running"
    )


def render(rows: list[dict[str, Any]]) -> str:
    width = max((len(r["user"]) for r in rows), default=4)
    lines = [f"{'user':<{width}}  {'login':<5}  {'server':<8}  reason"]
    for r in rows:
        login = "yes" if r["logged_in"] else "no"
        if r["disabled"]:
            login = "off"
        lines.append(f"{r['user']:<{width}}  {login:<5}  {r['server']:<8}  {r['reason']}")
    return "\n".join(lines)
