"""A small static file server for the sample assets, with HTTP Range requests.

``python -m cscale_extensions.sites.assets --root DIR --port P [--host 127.0.0.1]``

Serves regular files under DIR (no listings, nothing outside DIR). A single byte range
(``bytes=a-b``, ``bytes=a-``, ``bytes=-n``) gives 206 with ``Content-Range``; a range that
starts past the end gives 416 with ``Content-Range: bytes */size``; several ranges or a
malformed header are ignored (200 with the whole file, as RFC 9110 allows).
"""

from __future__ import annotations

import argparse
import json
import mimetypes
import os
import re
import signal
import sys
from email.utils import formatdate, parsedate_to_datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
CHUNK = 256 * 1024
TYPES = {
    ".tif": "image/tiff; application=geotiff",
    ".tiff": "image/tiff; application=geotiff",
    ".json": "application/json",
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


class AssetHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "cscale-assets/1"
    root: Path

    def log_message(self, format: str, *args: object) -> None:  # quiet unless errors
        pass

    def _error(self, status: HTTPStatus, detail: str, extra: dict[str, str] | None = None) -> None:
        body = json.dumps({"code": status.phrase, "description": detail}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _resolve(self) -> Path | None:
        rel = unquote(urlsplit(self.path).path).lstrip("/")
        if "\0" in rel:
            return None
        target = (self.root / rel).resolve()
        if target != self.root and self.root not in target.parents:
            return None
        return target if target.is_file() else None

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        path = self._resolve()
        if path is None:
            self._error(HTTPStatus.NOT_FOUND, f"no asset at {urlsplit(self.path).path}")
            return
        st = path.stat()
        size = st.st_size
        etag = f'"{st.st_mtime_ns:x}-{size:x}"'
        ctype = (
            TYPES.get(path.suffix.lower())
            or mimetypes.guess_type(path.name)[0]
            or "application/octet-stream"
        )
        common = {
            "Accept-Ranges": "bytes",
            "ETag": etag,
            "Last-Modified": formatdate(st.st_mtime, usegmt=True),
            "Access-Control-Allow-Origin": "*",
            "Access-Control-Expose-Headers": "Content-Range, Content-Length, ETag, Accept-Ranges",
        }
        ims = self.headers.get("If-Modified-Since")
        if self.headers.get("If-None-Match") == etag or (
            ims and not self.headers.get("Range") and _not_modified(ims, st.st_mtime)
        ):
            self.send_response(HTTPStatus.NOT_MODIFIED)
            for k, v in common.items():
                self.send_header(k, v)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        rng = parse_range(self.headers.get("Range"), size)
        if rng == "unsatisfiable":
            self._error(
                HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE,
                f"range {self.headers.get('Range')} is outside the file ({size} bytes)",
                {"Content-Range": f"bytes */{size}", **common},
            )
            return
        start, end = rng if isinstance(rng, tuple) else (0, size - 1)
        length = end - start + 1 if size else 0
        self.send_response(HTTPStatus.PARTIAL_CONTENT if isinstance(rng, tuple) else HTTPStatus.OK)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(length))
        if isinstance(rng, tuple):
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        for k, v in common.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command == "HEAD" or not length:
            return
        with open(path, "rb") as fh:
            fh.seek(start)
            left = length
            while left:
                chunk = fh.read(min(CHUNK, left))
                if not chunk:
                    break
                self.wfile.write(chunk)
                left -= len(chunk)

    def _not_allowed(self) -> None:
        self._error(
            HTTPStatus.METHOD_NOT_ALLOWED, "only GET and HEAD are served", {"Allow": "GET, HEAD"}
        )

    do_POST = do_PUT = do_DELETE = do_PATCH = _not_allowed


def _not_modified(header: str, mtime: float) -> bool:
    try:
        return int(mtime) <= parsedate_to_datetime(header).timestamp()
    except (TypeError, ValueError):
        return False


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def serve(root: Path, host: str, port: int) -> None:
    handler = type("Handler", (AssetHandler,), {"root": Path(root).resolve()})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m cscale_extensions.sites.assets", description=__doc__.splitlines()[0]
    )
    p.add_argument("--root", required=True, type=Path, help="folder to serve")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args(argv)
    if not args.root.is_dir():
        print(f"error: {args.root} is not a folder", file=sys.stderr)
        return 2
    os.umask(0o022)
    serve(args.root, args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
