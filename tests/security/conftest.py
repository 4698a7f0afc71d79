"""The stack shared by tests/security, and the report those tests write.

Tests carrying ``@pytest.mark.reliability(injected=..., expected=...)`` end up, with their
outcome, in the table of ``test-artifacts/reliability.md``, written after a session that ran
every one of them; ``make reliability`` copies it to ``docs/reliability.md`` (no test run
rewrites a file of the working tree).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from cscale_testing import LocalStack  # noqa: E402
from seckit import (  # noqa: E402
    CLIENT_ID,
    CLUSTER_LIMIT,
    MAX_PROCESSES,
    MEM_LIMIT,
    NAMED_LIMIT,
    REFRESH_AGE,
    RUNS_LIMIT,
    VO,
    SecStack,
    start_idp,
)

REPO = Path(__file__).resolve().parents[2]
#: the report of this run; ``make reliability`` makes it docs/reliability.md
REPORT = REPO / "test-artifacts" / "reliability.md"


@pytest.fixture(scope="session")
def sec(tmp_path_factory) -> Iterator[SecStack]:
    """The stack shared by tests/security (test_restarts.py runs last and stops it)."""
    base = Path(tempfile.mkdtemp(prefix="cscale-sec-", dir="/tmp"))
    os.chmod(base, 0o755)
    idp = start_idp(base / "idp")
    stack = None
    try:
        stack = LocalStack(
            config={
                "auth": {
                    "issuer": idp.issuer,
                    "client_secret": idp.client_secret,
                    "refresh_age": REFRESH_AGE,
                    "client_id": CLIENT_ID,
                    "vos": [VO],
                },
                "hub": {"named_server_limit_per_user": NAMED_LIMIT},
                "spawner": {"mem_limit": MEM_LIMIT, "limits": {"max_processes": MAX_PROCESSES}},
                "dask_gateway": {"max_clusters_per_user": CLUSTER_LIMIT},
                "runs": {"max_queued_per_user": RUNS_LIMIT, "max_concurrent_per_user": 1},
                "culler": {"activity_interval": 5, "enabled": False},
                "federation": {"embedded_sites": False},
            },
            data_dir=base / "stack",
        ).start()
        idp.register_redirect(stack.url + "hub/oauth_callback")
        yield SecStack(stack, idp)
    finally:
        if stack is not None:
            leftovers = stack.stop()
            assert not leftovers, f"processes of the stack left running: {leftovers}"
        idp.supervisor.stop()
        idp.front.close()
        if not os.environ.get("CSCALE_KEEP_TEST_DATA"):
            shutil.rmtree(base, ignore_errors=True)
        if stack is not None:
            assert not stack.ownership_changes, f"root handed out paths: {stack.ownership_changes}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """test_restarts.py kills and restarts parts of the shared ``sec`` stack and stops it at
    the end: run it after every other test of tests/security, whatever their file names."""
    here = Path(__file__).parent
    mine = [i for i in items if Path(str(i.path)).parent == here]
    if not mine:
        return
    last = [i for i in mine if Path(str(i.path)).name == "test_restarts.py"]
    rest = [i for i in items if i not in last]
    end = max(k for k, i in enumerate(rest) if Path(str(i.path)).parent == here)
    items[:] = rest[: end + 1] + last + rest[end + 1 :]


# --------------------------------------------------------------------------- the report


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "reliability(injected, expected): a fault-injection test listed in the reliability report "
        "(test-artifacts/reliability.md, docs/reliability.md)",
    )
    config._reliability = {}  # type: ignore[attr-defined]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()
    marker = item.get_closest_marker("reliability")
    if marker is None:
        return
    results = item.config._reliability  # type: ignore[attr-defined]
    prev = results.get(item.nodeid)
    if (
        rep.when == "call"
        or (rep.when == "setup" and rep.outcome != "passed")
        or (rep.when == "teardown" and rep.failed)
    ):
        if hasattr(rep, "wasxfail"):
            result = "xfail: " + (rep.wasxfail or "expected failure")
        elif rep.skipped:
            reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
            result = "skipped: " + reason.removeprefix("Skipped: ")
        elif rep.failed:
            msg = str(
                rep.longrepr.reprcrash.message
                if hasattr(rep.longrepr, "reprcrash") and rep.longrepr.reprcrash
                else rep.longrepr
            )
            result = "FAILED: " + msg.splitlines()[0][:160]
        else:
            result = "passed"
        if prev and prev["result"] != "passed" and result == "passed":
            return
        param = item.callspec.id if hasattr(item, "callspec") else ""
        results[item.nodeid] = {
            "test": item.nodeid.split("/")[-1],
            "injected": marker.kwargs.get("injected", "").replace("{param}", param),
            "expected": marker.kwargs.get("expected", "").replace("{param}", param),
            "result": result,
        }


def pytest_deselected(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("reliability") is not None:
            item.config._reliability_partial = True  # type: ignore[attr-defined]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Write test-artifacts/reliability.md when every marked test of tests/security ran."""
    results = getattr(session.config, "_reliability", {})
    if not results or os.environ.get("CSCALE_NO_RELIABILITY_REPORT"):
        return
    marked = {i.nodeid for i in session.items if i.get_closest_marker("reliability") is not None}
    collected = {Path(str(i.path)).resolve() for i in session.items}
    every_file = {p.resolve() for p in Path(__file__).parent.glob("test_*.py")}
    if (
        getattr(session.config, "_reliability_partial", False)
        or not marked <= set(results)
        or not every_file <= collected
    ):
        print(f"\n{REPORT.name} not written: not every reliability test ran in this session")
        return
    REPORT.parent.mkdir(exist_ok=True)
    REPORT.write_text(render_report(list(results.values())))
    print(f"\nwrote {REPORT.relative_to(REPO)} (`make reliability` makes it docs/reliability.md)")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_report(rows: list[dict[str, str]]) -> str:
    passed = sum(r["result"] == "passed" for r in rows)
    known = sum(r["result"].startswith("xfail") for r in rows)
    lines = [
        "# Reliability and security: what was injected, what happened",
        "",
        "Generated by `tests/security/conftest.py` from the outcomes of the last complete run of",
        "`tests/security` (written to `test-artifacts/reliability.md`, copied here by",
        "`make reliability`; do not edit by hand: rerun the tests).",
        f"Run finished {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}: {passed} of {len(rows)} passed, "
        f"{known} known defect(s) (xfail: the test shows the defect; the reason names it).",
        "",
        "How faults are injected: accounts, entitlements and `disabled` are changed in the embedded",
        "IdP's accounts file while it runs; refresh tokens are revoked at its revocation endpoint;",
        "ID tokens are rewritten by an HTTP front between the hub and the IdP's token endpoint;",
        "OAuth callbacks and hub cookies are replayed or altered by the test's HTTP client; the",
        "proxy and the hub are killed and started again by the test with their own argv/env/cwd",
        "while the launcher is paused, as Kubernetes would restart them (`cscale-hub up` also",
        "restarts a child that exits by itself, `platform.restart_limit`: tests/hub). Disks fill",
        "up for real: a small tmpfs mounted over part of a user's home. Databases are a real",
        "PostgreSQL stopped (fast shutdown, connections cut) and started again on the same data.",
        "The runs service is frozen with SIGSTOP so that nothing polls the user's server.",
        "Restarts of the runs service and of EO-MQS are tested with those services:",
        "tests/runs/test_lifecycle.py (queued and running runs survive a killed service) and",
        "tests/eomqs (paging tokens issued before a restart still work after it).",
        "",
        "Decisions behind the expectations:",
        "",
        "- ID tokens are verified by the hub (`cscale_extensions/hub/idtoken.py`): signature with a",
        "  key of the issuer's JWKS (asymmetric algorithms only), `iss`, `aud` (= client id), `exp`;",
        "  the userinfo `sub` must equal the ID token's. A failing ID token is a 403 page.",
        "- `Authenticator.auth_refresh_strict` is on: when tokens can no longer be refreshed (account",
        "  disabled, refresh token revoked or expired, VO left), API tokens stop working too, not",
        "  only the browser session. Leaving every admitted VO is re-checked at each refresh.",
        "- An unreachable IdP (no answer or 5xx) is not a reason to log anyone out: signed-in users",
        "  keep their current auth until the IdP answers again; a new sign-in gets a 503 page.",
        "  A code the IdP refuses (expired, used, forged) is a 403 page asking to log in again.",
        "- A full disk never damages what is saved. User servers save through",
        "  `cscale_extensions.singleuser.contents.SafeContentsManager`: a temporary file renamed over the",
        "  target only when complete (Jupyter Server's own save rewrote the file in place and left",
        "  it truncated when the disk filled at flush); a refused save is 507 with a message.",
        "  Headless runs save their output notebook the same way; the final status is written",
        "  from a small reserve file, so the run ends `failed` with 'the disk is full', not `lost`.",
        "- A database that cannot be reached is a 503 with Retry-After, from the hub (JupyterHub",
        "  itself treated it as 'not signed in': 403 to valid tokens, the login page to signed-in",
        "  users) and from the runs service. Runs keep executing in the users' servers and are",
        "  recorded when the database is back; a submission refused with 503 is not recorded.",
        "- The idle culler sees real work: a busy kernel and a running headless run (executors",
        "  keep a marker in `~/runs/.active`) count as activity of the server.",
        "",
        "| Test | Injected | Expected | Result |",
        "|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: r["test"]):
        lines.append(
            f"| `{_cell(r['test'])}` | {_cell(r['injected'])} | {_cell(r['expected'])} | "
            f"{_cell(r['result'])} |"
        )
    return "\n".join(lines) + "\n"
