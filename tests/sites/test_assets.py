"""The asset server: Range requests (206 / 416), HEAD, and nothing outside its folder."""

from __future__ import annotations

import http.client
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from cscale_extensions.localstack.sites import asset_server_spec
from cscale_extensions.localstack.supervisor import Supervisor
from cscale_extensions.net import free_port


@pytest.fixture(scope="module")
def assets(data_dir: Path) -> Iterator[tuple[str, Path]]:
    eodata = data_dir / "eodata"
    port = free_port()
    sup = Supervisor(data_dir / "logs", f"assets-test-{uuid.uuid4().hex[:8]}")
    try:
        sup.start(asset_server_spec(eodata, port))
        yield f"http://127.0.0.1:{port}", eodata
    finally:
        sup.stop()


@pytest.fixture(scope="module")
def cog(assets: tuple[str, Path]) -> tuple[str, bytes]:
    base, eodata = assets
    path = next(iter(sorted(eodata.glob("cogs/sentinel-2-l1c/*/B02.tif"))))
    return f"{base}/{path.relative_to(eodata).as_posix()}", path.read_bytes()


def test_whole_file(cog: tuple[str, bytes]) -> None:
    url, data = cog
    r = requests.get(url, timeout=10)
    assert r.status_code == 200
    assert r.content == data
    assert r.headers["Content-Length"] == str(len(data))
    assert r.headers["Accept-Ranges"] == "bytes"
    assert r.headers["Content-Type"].startswith("image/tiff")


@pytest.mark.parametrize(
    ("header", "sl"),
    [
        ("bytes=0-15", slice(0, 16)),
        ("bytes=1000-1999", slice(1000, 2000)),
        ("bytes=-100", slice(-100, None)),
        ("bytes=5000-", slice(5000, None)),
    ],
)
def test_range_gives_206_with_the_right_bytes(
    cog: tuple[str, bytes], header: str, sl: slice
) -> None:
    url, data = cog
    r = requests.get(url, headers={"Range": header}, timeout=10)
    assert r.status_code == 206
    want = data[sl]
    assert r.content == want
    assert r.headers["Content-Length"] == str(len(want))
    start = sl.start if sl.start is None or sl.start >= 0 else len(data) + sl.start
    start = start or 0
    assert r.headers["Content-Range"] == f"bytes {start}-{start + len(want) - 1}/{len(data)}"


def test_range_past_the_end_is_clipped(cog: tuple[str, bytes]) -> None:
    url, data = cog
    r = requests.get(
        url, headers={"Range": f"bytes={len(data) - 10}-{len(data) + 5000}"}, timeout=10
    )
    assert r.status_code == 206
    assert r.content == data[-10:]


def test_range_outside_the_file_gives_416(cog: tuple[str, bytes]) -> None:
    url, data = cog
    r = requests.get(url, headers={"Range": f"bytes={len(data)}-{len(data) + 10}"}, timeout=10)
    assert r.status_code == 416
    assert r.headers["Content-Range"] == f"bytes */{len(data)}"
    assert r.json()["code"] == "Requested Range Not Satisfiable"


def test_head_tells_the_size(cog: tuple[str, bytes]) -> None:
    url, data = cog
    r = requests.head(url, timeout=10)
    assert r.status_code == 200 and r.content == b""
    assert r.headers["Content-Length"] == str(len(data))


def test_missing_and_outside_paths_are_404(assets: tuple[str, Path]) -> None:
    base, _ = assets
    assert requests.get(f"{base}/cogs/nope.tif", timeout=10).status_code == 404
    port = int(base.rsplit(":", 1)[1])
    for raw in ("/../../../../etc/passwd", "/%2e%2e/%2e%2e/%2e%2e/etc/passwd", "/cogs"):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", raw)
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 404, raw
        assert b"root:" not in body
        conn.close()


def test_other_methods_are_405(cog: tuple[str, bytes]) -> None:
    url, _ = cog
    r = requests.post(url, data=b"x", timeout=10)
    assert r.status_code == 405
    assert r.json()["description"]


def test_keep_alive_serves_several_ranges_on_one_connection(cog: tuple[str, bytes]) -> None:
    url, data = cog
    with requests.Session() as s:
        for start in (0, 4096, 65536):
            r = s.get(url, headers={"Range": f"bytes={start}-{start + 511}"}, timeout=10)
            assert r.status_code == 206 and r.content == data[start : start + 512]


def test_half_sent_requests_hold_nothing_for_long(data_dir: Path) -> None:
    """Slowloris: 120 connections that send half a request and wait. The server must not
    spend a thread on each (it runs on one event loop), must close them once the header
    timeout passes, and must then serve a whole request as usual."""
    import socket
    import subprocess
    import sys
    import time

    import psutil

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cscale_extensions.localstack.sites.assets", "--root",
         str(data_dir / "eodata"), "--port", str(port), "--header-timeout", "2",
         "--max-connections", "64"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    held: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{port}/manifest.json", timeout=5).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.2)
        for _ in range(120):
            s = socket.create_connection(("127.0.0.1", port), timeout=15)
            s.sendall(b"GET /manifest.json HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            held.append(s)
        time.sleep(0.5)
        assert psutil.Process(proc.pid).num_threads() < 20
        closed = 0
        for s in held:  # each is closed by the server (recv gives EOF), not left hanging
            try:
                if s.recv(4096) == b"":
                    closed += 1
            except ConnectionResetError:
                closed += 1
        assert closed == len(held)
        r = requests.get(f"http://127.0.0.1:{port}/manifest.json", timeout=10)
        assert r.status_code == 200 and r.json()
    finally:
        for s in held:
            s.close()
        proc.terminate()
        proc.wait(timeout=10)
