"""The static file server of the sample assets: Starlette under uvicorn, with HTTP Range.

``python -m cscale_extensions.localstack.sites.assets --root DIR --port P [--host 127.0.0.1]``

Serves regular files under DIR (no listings, nothing outside DIR). A single byte range
(``bytes=a-b``, ``bytes=a-``, ``bytes=-n``) gives 206 with ``Content-Range``; a range that
starts past the end gives 416 with ``Content-Range: bytes */size``; several ranges or a
malformed header are ignored (200 with the whole file, as RFC 9110 allows).

Every reader of the federation's data comes here, so it must not be starved by a few bad
clients: it runs on one event loop (no thread per connection), answers 503 beyond
``--max-connections``, and closes a connection whose request headers have not arrived whole
within ``--header-timeout`` seconds of its first byte (a half-sent request holds nothing for
long), or that stays idle between requests longer than the keep-alive timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import mimetypes
import os
import re
import stat
import sys
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path
from urllib.parse import unquote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
TYPES = {
    ".tif": "image/tiff; application=geotiff",
    ".tiff": "image/tiff; application=geotiff",
    ".json": "application/json",
}
CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": "Content-Range, Content-Length, ETag, Accept-Ranges",
}


def parse_range(header: str | None, size: int) -> tuple[int, int] | None | str:
    """(start, end inclusive) for one satisfiable range; None to send all; "unsatisfiable"."""
    if not header:
        return None
    m = RANGE.match(header.strip())
    if not m or (not m[1] and not m[2]):
        return None
    if not m[1]:  # suffix range: the last n bytes
        n = int(m[2])
        if n == 0:
            return "unsatisfiable"
        return (max(size - n, 0), size - 1) if size else "unsatisfiable"
    start = int(m[1])
    end = int(m[2]) if m[2] else size - 1
    if end < start:
        return None
    if start >= size:
        return "unsatisfiable"
    return start, min(end, size - 1)


def _error(status: int, phrase: str, detail: str, headers: dict[str, str] | None = None):
    return JSONResponse({"code": phrase, "description": detail}, status, headers=headers)


def _not_modified(header: str, mtime: float) -> bool:
    try:
        return int(mtime) <= parsedate_to_datetime(header).timestamp()
    except (TypeError, ValueError):
        return False


class RangedFile:
    """ASGI response: the file, or the one range our parser accepted (Starlette's
    FileResponse sends it; the request's own Range headers are replaced by that range)."""

    def __init__(self, path: Path, st: os.stat_result, rng: tuple[int, int] | None, headers):
        self.path, self.st, self.rng, self.headers = path, st, rng, headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kept = [(k, v) for k, v in scope["headers"] if k not in (b"range", b"if-range")]
        if self.rng is not None:
            kept.append((b"range", f"bytes={self.rng[0]}-{self.rng[1]}".encode()))
        ctype = (
            TYPES.get(self.path.suffix.lower())
            or mimetypes.guess_type(self.path.name)[0]
            or "application/octet-stream"
        )
        response = FileResponse(self.path, headers=self.headers, media_type=ctype,
                                stat_result=self.st)
        await response({**scope, "headers": kept}, receive, send)


def make_app(root: Path) -> Starlette:
    root = Path(root).resolve()

    def resolve(raw: str) -> Path | None:
        rel = unquote(raw).lstrip("/")
        if "\0" in rel:
            return None
        target = (root / rel).resolve()
        if target != root and root not in target.parents:
            return None
        return target

    async def serve(request: Request):
        if request.method not in ("GET", "HEAD"):
            return _error(405, "Method Not Allowed", "only GET and HEAD are served",
                          {"Allow": "GET, HEAD"})
        path = resolve(request.scope.get("raw_path", b"").decode("latin-1").split("?")[0]
                       or request.url.path)
        try:
            st = path.stat() if path is not None else None
        except OSError:
            st = None
        if st is None or not stat.S_ISREG(st.st_mode):
            return _error(404, "Not Found", f"no asset at {request.url.path}")
        size = st.st_size
        etag = f'"{st.st_mtime_ns:x}-{size:x}"'
        common = {"Accept-Ranges": "bytes", "ETag": etag,
                  "Last-Modified": formatdate(st.st_mtime, usegmt=True), **CORS}
        ims = request.headers.get("if-modified-since")
        if request.headers.get("if-none-match") == etag or (
            ims and not request.headers.get("range") and _not_modified(ims, st.st_mtime)
        ):
            return Response(status_code=304, headers=common)
        rng = parse_range(request.headers.get("range"), size)
        if rng == "unsatisfiable":
            return _error(
                416, "Requested Range Not Satisfiable",
                f"range {request.headers.get('range')} is outside the file ({size} bytes)",
                {"Content-Range": f"bytes */{size}", **common},
            )
        return RangedFile(path, st, rng if isinstance(rng, tuple) else None, common)

    return Starlette(routes=[Route("/{path:path}", serve, methods=["GET", "HEAD", "POST", "PUT",
                                                                   "DELETE", "PATCH"])])


class HeaderDeadline(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request line and headers have not
    all arrived within ``header_timeout`` seconds of the request's first byte (or of the
    connection): uvicorn itself waits for them forever."""

    header_timeout = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._deadline: asyncio.TimerHandle | None = None
        self._arm()

    def _arm(self) -> None:
        if self._deadline is None:
            self._deadline = self.loop.call_later(self.header_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()

    def _in_request(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def data_received(self, data: bytes) -> None:
        if not self._in_request():  # the first bytes of a request (a new one on keep-alive)
            self._arm()
        super().data_received(data)
        if self._in_request():  # its headers are complete
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def serve(root: Path, host: str, port: int, *, max_connections: int = 256,
          header_timeout: float = 10.0, keep_alive: float = 5.0) -> None:
    import uvicorn

    protocol = type("Protocol", (HeaderDeadline,), {"header_timeout": header_timeout})
    uvicorn.run(
        make_app(root), host=host, port=port, http=protocol, lifespan="off",
        limit_concurrency=max_connections, backlog=1024, timeout_keep_alive=keep_alive,
        log_level="warning", access_log=False, server_header=False,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m cscale_extensions.localstack.sites.assets", description=__doc__.splitlines()[0]
    )
    p.add_argument("--root", required=True, type=Path, help="folder to serve")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--max-connections", type=int, default=256,
                   help="connections served at once; more are answered 503")
    p.add_argument("--header-timeout", type=float, default=10.0,
                   help="seconds a request's headers may take to arrive")
    args = p.parse_args(argv)
    if not args.root.is_dir():
        print(f"error: {args.root} is not a folder", file=sys.stderr)
        return 2
    os.umask(0o022)
    serve(args.root, args.host, args.port, max_connections=args.max_connections,
          header_timeout=args.header_timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
