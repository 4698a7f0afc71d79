"""Execute code in a kernel of a user's Jupyter server over the real kernel websocket.

One client of the Jupyter messaging protocol for every caller that drives a user's kernel from
outside: ``workshop capacity`` (what a first cell costs), the test harness and benchmarks. It
speaks to the server as a browser would (REST to start the kernel, then the ``channels``
websocket), so what it measures is what a participant gets.
"""

from __future__ import annotations

import json
import re
import time
import uuid

import httpx
import websocket

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def start_kernel(server_url: str, token: str) -> str:
    """Start a ``python3`` kernel in the user server at ``server_url``; return its id."""
    base = server_url.rstrip("/")
    r = httpx.post(f"{base}/api/kernels", json={"name": "python3"},
                   headers={"Authorization": f"token {token}"}, timeout=60)
    if r.status_code != 201:
        raise RuntimeError(f"cannot start a kernel: HTTP {r.status_code} {r.text[:200]}")
    return r.json()["id"]


def delete_kernel(server_url: str, token: str, kernel_id: str) -> None:
    """Shut down and remove kernel ``kernel_id`` of the user server at ``server_url``."""
    httpx.delete(f"{server_url.rstrip('/')}/api/kernels/{kernel_id}",
                 headers={"Authorization": f"token {token}"}, timeout=30)


def _send_execute(ws: websocket.WebSocket, code: str) -> str:
    msg_id = uuid.uuid4().hex
    ws.send(json.dumps({
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "cscale",
                   "session": uuid.uuid4().hex, "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": "shell",
        "content": {"code": code, "silent": False, "store_history": False,
                    "user_expressions": {}, "allow_stdin": False},
    }))
    return msg_id


def _channels(base: str, token: str, kernel_id: str, timeout: float) -> websocket.WebSocket:
    url = base.replace("http", "ws", 1) + f"/api/kernels/{kernel_id}/channels"
    return websocket.create_connection(url, header=[f"Authorization: token {token}"], timeout=timeout)


def start_busy_kernel(server_url: str, token: str, seconds: int) -> str:
    """Start a kernel in the user server at ``server_url`` and leave it executing a silent
    ``time.sleep(seconds)`` (busy, no output); return its id once it reports busy."""
    base = server_url.rstrip("/")
    kid = start_kernel(base, token)
    ws = _channels(base, token, kid, 60)
    try:
        _send_execute(ws, f"import time; time.sleep({seconds})")
        while True:  # hang up once busy: the cell keeps running
            msg = json.loads(ws.recv())
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "busy":
                return kid
    finally:
        ws.close()


def run_in_kernel(server_url: str, token: str, code: str, timeout: float = 120,
                  kernel_id: str | None = None) -> str:
    """Execute ``code`` in a kernel of the user server at ``server_url`` (a new one, deleted
    afterwards, unless ``kernel_id`` is given) and return its stdout; raise RuntimeError with
    the traceback on error, TimeoutError after ``timeout`` seconds."""
    base = server_url.rstrip("/")
    own_kernel = kernel_id is None
    kernel_id = kernel_id or start_kernel(base, token)
    ws = _channels(base, token, kernel_id, timeout)
    try:
        msg_id = _send_execute(ws, code)
        out: list[str] = []
        error = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = json.loads(ws.recv())
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                out.append(content["text"])
            elif kind in ("execute_result", "display_data"):
                out.append(content["data"].get("text/plain", "") + "\n")
            elif kind == "error":
                error = "\n".join(content.get("traceback", [])) or content.get("evalue", "")
            elif kind == "status" and content["execution_state"] == "idle":
                break
        else:
            raise TimeoutError(f"kernel did not finish within {timeout}s")
    finally:
        ws.close()
        if own_kernel:
            delete_kernel(base, token, kernel_id)
    if error:
        raise RuntimeError(ANSI.sub("", error))
    return "".join(out)
