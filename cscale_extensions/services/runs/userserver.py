"""Reach a user's ``runs`` server: start it through the hub, then use its Jupyter Server API.

Everything goes over HTTP. The hub REST API, with the service's own hub token, starts the
named server (so it gets the user's spawner, profile, limits, environment and home). The user
server's REST API is reached through the hub's proxy (contents API to write the run spec and
read status/output/log; one small "launcher" kernel per user to start detached executors) with
a short-lived token of that user which opens only that server (:mod:`.usertokens`): the
server, and so the user, never sees the service's token.

The user controls that server (their own ``~/.jupyter`` config is loaded by it), so every
answer is untrusted: at most a given number of bytes of it is read (:class:`TooLarge`
beyond), and its JSON is checked for the shape expected before use.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import httpx
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from cscale_extensions.services.runs.usertokens import TokenError, UserTokens

log = logging.getLogger("cscale.runs")


class ServerError(RuntimeError):
    """The user's server could not be started or reached."""


class _LauncherFailed(Exception):
    """Both tries in the launcher kernel failed; ``last`` says how."""

    def __init__(self, last: Exception | None):
        super().__init__(str(last))
        self.last = last


class Gone(ServerError):
    """The user's server is not running (any more)."""


class TooLarge(ServerError):
    """The server's answer is larger than the service reads."""


#: most bytes read of an answer of a user's server when the caller gives no limit
ANSWER_MAX_BYTES = 1024 * 1024
#: most text gathered from the launcher kernel's output
LAUNCH_OUTPUT_MAX = 64 * 1024
_DROP = {"content-encoding", "content-length", "transfer-encoding"}


LAUNCH_CODE = """
import json as _j, os as _o, socket as _k, subprocess as _s, sys as _y, shlex as _q
def _launch(rel):
    d, root = _o.path.abspath(rel), _o.getcwd()
    try:  # the user's fork server (papermill already imported)
        with _k.socket(_k.AF_UNIX, _k.SOCK_STREAM) as c:
            c.settimeout(20)
            c.connect(_o.path.join(root, "runs", ".executor.sock"))
            c.sendall((_j.dumps({{"run_dir": d, "env": dict(_o.environ)}}) + "\\n").encode())
            answer = _j.loads(c.makefile("r").readline())
        if "pid" in answer:
            return "launched via fork server"
    except (OSError, ValueError):
        fs = [_y.executable, "-m", "cscale_extensions.services.runs.forkserver", "--root", root,
              "--server-pid", str(_o.getppid()), "--parent-pid", str(_o.getpid())]
        with open(_o.path.join(root, "runs", "forkserver.log"), "ab") as log:
            _s.Popen(fs, stdin=_s.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    ex = [_y.executable, "-m", "cscale_extensions.services.runs.executor", d, "--root", root]
    _s.run(["sh", "-c", "setsid " + " ".join(map(_q.quote, ex)) + " </dev/null >>"
            + _q.quote(_o.path.join(d, "log.txt")) + " 2>&1 &"], check=True)
    return "launched directly"
print(_launch({rel!r}))
"""


class UserServers:
    """Client for the hub API and the users' ``runs`` servers."""

    def __init__(
        self,
        hub_api_url: str,
        proxy_url: str,
        token: str,
        server_name: str,
        start_timeout: float = 300.0,
    ):
        self.hub_api = hub_api_url.rstrip("/")
        parts = urlsplit(proxy_url)
        self.proxy_origin = f"{parts.scheme}://{parts.netloc}"
        self.server_name = server_name
        self.start_timeout = start_timeout
        # the service's own token: sent to the hub API only, never to a user's server
        self.http = httpx.AsyncClient(headers={"Authorization": f"token {token}"}, timeout=30.0)
        # to the users' servers: no default credentials; each request carries the user's token
        self.servers_http = httpx.AsyncClient(timeout=30.0)
        self.tokens = UserTokens(self.http, self.hub_api, server_name)
        self._urls: dict[str, str] = {}
        #: Host header per user when their server is on a host of its own (per-user origins)
        self._hosts: dict[str, str] = {}
        self._kernels: dict[str, str] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._dirs: set[str] = set()

    async def close(self) -> None:
        await self.tokens.close()
        await self.servers_http.aclose()
        await self.http.aclose()

    async def _user_token(self, user: str) -> str:
        try:
            return await self.tokens.get(user)
        except TokenError as exc:
            raise ServerError(str(exc)) from exc

    # hub side
    async def user_model(self, user: str) -> dict[str, Any] | None:
        try:
            r = await self.http.get(f"{self.hub_api}/users/{quote(user)}")
        except httpx.HTTPError as exc:
            raise ServerError(f"cannot reach the hub API: {exc}") from exc
        if r.status_code == 404:
            return None
        if r.status_code != 200:
            raise ServerError(f"hub API: {r.status_code} {_hub_message(r)}")
        return r.json()

    async def server_state(self, user: str) -> dict[str, Any] | None:
        model = await self.user_model(user)
        return ((model or {}).get("servers") or {}).get(self.server_name)

    async def ensure_server(self, user: str) -> str:
        """The base URL of the user's runs server, starting it if needed."""
        lock = self._locks.setdefault(user, asyncio.Lock())
        async with lock:
            deadline = time.monotonic() + self.start_timeout
            requested, refusal = False, ""
            while True:
                state = await self.server_state(user)
                if state and state.get("ready"):
                    url = self._remember(user, state)
                    if self._urls.get(user) != url:
                        self._kernels.pop(user, None)
                        self._dirs.discard(user)
                    self._urls[user] = url
                    return url
                if not state or not state.get("pending"):
                    if requested:  # asked once; neither ready nor starting: the spawn failed
                        raise ServerError(
                            f"the {self.server_name!r} server of {user} failed to start"
                            + (f": {refusal}" if refusal else "")
                        )
                    r = await self.http.post(
                        f"{self.hub_api}/users/{quote(user)}/servers/{self.server_name}", json={}
                    )
                    if r.status_code not in (201, 202, 400):
                        raise ServerError(
                            f"the hub refused to start the {self.server_name!r} server of {user}: "
                            f"{r.status_code} {_hub_message(r)}"
                        )
                    refusal = _hub_message(r) if r.status_code == 400 else ""
                    requested = True
                if time.monotonic() > deadline:
                    raise ServerError(
                        f"the {self.server_name!r} server of {user} did not start in time"
                    )
                await asyncio.sleep(0.5)

    def _remember(self, user: str, state: dict[str, Any]) -> str:
        """The URL to connect to for the server in ``state``, always through the configured
        proxy; with per-user subdomains the hub gives an absolute URL on the user's host, which
        is then sent as the Host header (inside a cluster the public host may not resolve)."""
        target = urlsplit(urljoin(self.proxy_origin + "/", state["url"]))
        if target.netloc and target.netloc != urlsplit(self.proxy_origin).netloc:
            self._hosts[user] = target.netloc
        else:
            self._hosts.pop(user, None)
        return self.proxy_origin + target.path

    def _host_header(self, user: str) -> dict[str, str]:
        host = self._hosts.get(user)
        return {"Host": host} if host else {}

    async def known(self, user: str) -> bool:
        """True when the user's server URL is known (asking the hub if needed)."""
        return user in self._urls or await self.refresh_url(user)

    def _url(self, user: str) -> str:
        try:
            return self._urls[user]
        except KeyError:
            raise Gone(f"no known server for {user}") from None

    async def _send(
        self, method: str, url: str, headers: dict[str, str], max_bytes: int, **kw: Any
    ) -> httpx.Response:
        """One request; at most ``max_bytes`` of the (decoded) answer are read."""
        request = self.servers_http.build_request(method, url, headers=headers, **kw)
        r = await self.servers_http.send(request, stream=True)
        body = bytearray()
        try:
            async for chunk in r.aiter_bytes():
                body += chunk
                if len(body) > max_bytes:
                    raise TooLarge(
                        f"{method} {urlsplit(url).path}: the answer is larger than {max_bytes} "
                        "bytes"
                    )
        finally:
            await r.aclose()
        kept = [(k, v) for k, v in r.headers.multi_items() if k.lower() not in _DROP]
        return httpx.Response(r.status_code, headers=kept, content=bytes(body), request=request)

    async def _request(
        self, user: str, method: str, path: str, max_bytes: int = ANSWER_MAX_BYTES, **kw: Any
    ) -> httpx.Response:
        url = self._url(user) + path
        for attempt in (1, 2):
            token = await self._user_token(user)
            headers = {"Authorization": f"token {token}", **self._host_header(user)}
            try:
                r = await self._send(method, url, headers, max_bytes, **kw)
            except httpx.HTTPError as exc:
                raise ServerError(f"{method} {path} on the server of {user}: {exc}") from exc
            if r.status_code not in (401, 403) or attempt == 2:
                break
            # revoked (e.g. by the user on their token page) or deleted at renewal: a fresh one
            await self.tokens.discard(user, token)
        if r.status_code in (502, 503, 424) or (r.status_code == 404 and "/hub/" in str(r.url)):
            self._urls.pop(user, None)
            raise Gone(f"the {self.server_name!r} server of {user} is not running")
        if r.status_code == 302 and "/hub/" in r.headers.get("location", ""):
            self._urls.pop(user, None)
            raise Gone(f"the {self.server_name!r} server of {user} is not running")
        return r

    async def refresh_url(self, user: str) -> bool:
        """Re-learn the server URL from the hub; False when the server is not running."""
        state = await self.server_state(user)
        if state and state.get("ready"):
            self._urls[user] = self._remember(user, state)
            return True
        self._urls.pop(user, None)
        return False

    # contents API
    async def mkdir(self, user: str, path: str) -> None:
        r = await self._request(
            user, "PUT", f"api/contents/{quote(path)}", json={"type": "directory"}
        )
        if r.status_code not in (200, 201):
            raise ServerError(f"cannot create {path} for {user}: {r.status_code} {r.text[:200]}")

    async def write_text(self, user: str, path: str, text: str) -> None:
        body = {"type": "file", "format": "text", "content": text}
        r = await self._request(user, "PUT", f"api/contents/{quote(path)}", json=body)
        if r.status_code not in (200, 201):
            raise ServerError(f"cannot write {path} for {user}: {r.status_code} {r.text[:200]}")

    async def read_text(
        self, user: str, path: str, max_bytes: int = ANSWER_MAX_BYTES
    ) -> str | None:
        """A text file of the user's server, or None when it does not exist; :class:`TooLarge`
        when the server's answer (the file as JSON) is larger than ``max_bytes``."""
        r = await self._request(
            user,
            "GET",
            f"api/contents/{quote(path)}",
            max_bytes=max_bytes,
            params={"type": "file", "format": "text", "content": "1"},
        )
        if r.status_code == 404:
            return None
        if r.status_code != 200:
            raise ServerError(f"cannot read {path} for {user}: {r.status_code}")
        model = _json(r)
        if not isinstance(model, dict) or not isinstance(model.get("content"), str):
            raise ServerError(f"reading {path} for {user}: not a text file model")
        return model["content"]

    async def prepare_dir(self, user: str, run_dir: str) -> None:
        if user not in self._dirs:
            await self.mkdir(user, run_dir.split("/")[0])
            self._dirs.add(user)
        await self.mkdir(user, run_dir)

    # launcher kernel
    async def _kernel(self, user: str, fresh: bool = False) -> str:
        if not fresh and user in self._kernels:
            return self._kernels[user]
        r = await self._request(user, "POST", "api/kernels", json={})
        if r.status_code not in (200, 201):
            raise ServerError(
                f"cannot start a launcher kernel for {user}: {r.status_code} {r.text[:200]}"
            )
        kernel = _json(r)
        kernel_id = kernel.get("id") if isinstance(kernel, dict) else None
        if not isinstance(kernel_id, str) or not kernel_id.replace("-", "").isalnum():
            raise ServerError(f"the server of {user} gave no usable kernel id")
        self._kernels[user] = kernel_id
        return kernel_id

    async def launch(self, user: str, run_dir: str) -> None:
        """Start the detached executor for ``run_dir`` in the user's server."""
        try:
            await self._in_launcher(user, LAUNCH_CODE.format(rel=run_dir), lambda out: "launched" in out)
        except _LauncherFailed as exc:
            raise ServerError(f"could not launch the executor for {user}: {exc.last}") from None

    async def run_launcher(
        self, user: str, code: str, before_again: Callable[[], Awaitable[str | None]] | None = None
    ) -> str:
        """Execute ``code`` in the user's launcher kernel (a fresh kernel if that one does not
        answer) and return what it printed: output of the user's side, untrusted.

        ``before_again``: asked before ``code`` runs a second time (the first run may have
        done its work with the answer lost); what it returns (not None) is the answer."""
        try:
            return await self._in_launcher(user, code, lambda out: True, before_again)
        except _LauncherFailed as exc:
            raise ServerError(f"the launcher kernel of {user} did not answer: {exc.last}") from None

    async def _in_launcher(
        self,
        user: str,
        code: str,
        accepted: Callable[[str], bool],
        before_again: Callable[[], Awaitable[str | None]] | None = None,
    ) -> str:
        """Run ``code`` in the user's launcher kernel until its output is ``accepted``: once
        in the kernel at hand, once more in a fresh one (unless ``before_again`` answers)."""
        lock = self._locks.setdefault(user, asyncio.Lock())
        async with lock:
            last: Exception | None = None
            for fresh in (False, True):
                if fresh and before_again is not None:
                    answer = await before_again()
                    if answer is not None:
                        return answer
                kernel = await self._kernel(user, fresh=fresh)
                try:
                    out = await self._execute(user, kernel, code)
                except (OSError, ServerError, TimeoutError) as exc:
                    last = exc
                    self._kernels.pop(user, None)
                    continue
                if accepted(out):
                    return out
                last = ServerError(f"launcher said: {out[-500:]}")
            raise _LauncherFailed(last)

    async def shutdown_kernel(self, user: str) -> None:
        kernel = self._kernels.pop(user, None)
        if kernel and user in self._urls:
            with contextlib.suppress(ServerError):
                await self._request(user, "DELETE", f"api/kernels/{kernel}")

    async def _execute(self, user: str, kernel: str, code: str, timeout: float = 60.0) -> str:
        ws_url = self._url(user).replace("http", "ws", 1) + f"api/kernels/{kernel}/channels"
        token = await self._user_token(user)
        headers = {"Authorization": f"token {token}", **self._host_header(user)}
        req = HTTPRequest(ws_url, headers=headers, request_timeout=30)
        try:
            conn = await websocket_connect(req, max_message_size=ANSWER_MAX_BYTES)
        except Exception as exc:
            raise ServerError(f"kernel websocket for {user}: {exc}") from exc
        msg_id = uuid.uuid4().hex
        msg = {
            "header": {
                "msg_id": msg_id,
                "username": "runs",
                "session": uuid.uuid4().hex,
                "msg_type": "execute_request",
                "version": "5.3",
                "date": datetime.now(UTC).isoformat(),
            },
            "parent_header": {},
            "metadata": {},
            "channel": "shell",
            "buffers": [],
            "content": {
                "code": code,
                "silent": False,
                "store_history": False,
                "user_expressions": {},
                "allow_stdin": False,
                "stop_on_error": True,
            },
        }
        out: list[str] = []
        try:
            await conn.write_message(json.dumps(msg))
            deadline = time.monotonic() + timeout
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("launcher kernel did not answer")
                raw = await asyncio.wait_for(conn.read_message(), remaining)
                if raw is None:
                    raise ServerError("kernel websocket closed")
                if isinstance(raw, bytes):
                    continue
                try:
                    reply = json.loads(raw)
                    if reply.get("parent_header", {}).get("msg_id") != msg_id:
                        continue
                    kind = reply.get("msg_type") or reply["header"]["msg_type"]
                    content = reply.get("content") or {}
                    if kind == "stream":
                        out.append(str(content.get("text", "")))
                    elif kind == "error":
                        out.append("\n".join(map(str, content.get("traceback", []))))
                    elif kind == "execute_reply":
                        return "".join(out)[-LAUNCH_OUTPUT_MAX:]
                except (ValueError, AttributeError, KeyError, TypeError) as exc:
                    raise ServerError(f"the launcher kernel of {user} sent a bad message") from exc
                if sum(map(len, out)) > LAUNCH_OUTPUT_MAX:
                    out = ["".join(out)[-LAUNCH_OUTPUT_MAX:]]
        finally:
            conn.close()


def _json(r: httpx.Response) -> Any:
    try:
        return r.json()
    except ValueError as exc:
        raise ServerError(f"{r.request.url.path}: the answer is not JSON") from exc


def _hub_message(r: httpx.Response) -> str:
    try:
        return r.json().get("message", r.text[:200])
    except ValueError:
        return r.text[:200]
