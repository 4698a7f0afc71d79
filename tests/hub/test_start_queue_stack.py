"""Server starts wait their turn on a real hub (``spawner.start_concurrency`` 1).

Three members sign in at once; with no compute-site form here, each sign-in starts their
server, as a browser's does. The hub starts one at a time in arrival order (each until its
server answers): every participant whose start waited reads on the spawn page's event
stream how many starts were ahead, the hub log says who queued, and every server becomes
ready. (On a 2-core machine twenty starts at once all missed ``http_timeout``:
cscale_extensions/hub/startqueue.py.)
"""

from __future__ import annotations

import json
import threading
from urllib.parse import quote, urljoin

import pytest
import requests
from cscale_testing import LocalStack

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack():
    st = LocalStack(config={
        "spawner": {"start_concurrency": 1},
        "federation": {"embedded_sites": False},
        "dask_gateway": {"enabled": False}, "eomqs": {"enabled": False},
        "runs": {"enabled": False},
    }).start()
    try:
        yield st
    finally:
        assert st.finish() == []


def _progress(s: requests.Session, hub: str, user: str) -> list[dict]:
    """The spawn's progress events until ready (the stream the spawn page reads)."""
    events = []
    with s.get(urljoin(hub, f"hub/api/users/{quote(user)}/server/progress"), stream=True,
               timeout=180) as r:
        assert r.status_code == 200, r.text[:300]
        for line in r.iter_lines(decode_unicode=True):
            if line and line.startswith("data:"):
                event = json.loads(line[5:])
                events.append(event)
                assert not event.get("failed"), event
                if event.get("ready"):
                    return events
    raise AssertionError(f"stream ended before ready: {events}")


def test_starts_run_one_at_a_time_in_arrival_order_and_say_how_many_are_ahead(stack):
    users = [stack.add_user("queue") for _ in range(3)]
    sessions: dict[str, requests.Session] = {}
    events: dict[str, list[dict]] = {}

    def arrive(u: str) -> None:
        sessions[u] = stack.login(u)  # the sign-in's redirect asks for the server
        events[u] = _progress(sessions[u], stack.url, u)

    threads = [threading.Thread(target=arrive, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert sorted(events) == sorted(users), "a participant got no ready server"
    waited = {u: [e["message"] for e in ev if e.get("message", "").startswith("Waiting to start")]
              for u, ev in events.items()}
    # the first to arrive started at once; the others read how many were ahead of them
    assert sum(1 for msgs in waited.values() if not msgs) == 1, waited
    aheads = sorted(int(msgs[0].split(": ")[1].split()[0]) for msgs in waited.values() if msgs)
    assert aheads[0] >= 1 and aheads[-1] <= 2, waited
    assert all("this hub starts 1 at a time" in msgs[0] for msgs in waited.values() if msgs)
    log = (stack.state_dir / "logs" / "hub.log").read_text(errors="replace")
    queued = [u for u in users if f"start of {u} queued behind" in log]
    assert len(queued) == 2, log[-3000:]
    for u in users:
        model = stack.api(stack.api_token(u)).get(stack.url + f"hub/api/users/{u}",
                                                  timeout=30).json()
        assert model["servers"][""]["ready"], model
