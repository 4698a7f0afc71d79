"""The contents manager of user servers: saving never damages the saved file.

Jupyter Server's own "atomic" save copies the old file aside, then rewrites the file in
place. When the disk fills up during that rewrite (after the last buffered write, at flush),
the file is left truncated and the old content sits in a hidden ``.~`` copy. Here every save
writes a temporary file beside the target and renames it over the target only once it is
complete and synced: a failed save leaves the previous version exactly as it was.

A save refused for lack of space (ENOSPC, EDQUOT) is answered with 507 Insufficient Storage
and a message that says so, instead of a generic 500.

Also a Jupyter Server extension (enabled in the package's server settings): at link time, before
the server creates its contents manager, it makes :class:`SafeContentsManager` the default
unless ``ServerApp.contents_manager_class`` is configured explicitly.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Iterator
from typing import IO, Any

from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager
from tornado.web import HTTPError

FULL = (errno.ENOSPC, errno.EDQUOT)


def _umask() -> int:
    """The process umask, read without changing it (Linux); 022 elsewhere."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def is_disk_full(exc: BaseException | None) -> bool:
    """Whether ``exc`` or anything in its cause chain is "no space" or "quota exceeded"."""
    for _ in range(10):
        if exc is None:
            return False
        if isinstance(exc, OSError) and exc.errno in FULL:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


@contextlib.contextmanager
def replacing(path: str, text: bool = True, encoding: str = "utf-8", **kwargs: Any) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success rename it over ``path``."""
    if os.path.islink(path):
        path = os.path.join(os.path.dirname(path), os.readlink(path))
    directory, name = os.path.split(path)
    fd, tmp = tempfile.mkstemp(prefix=f".~{name}.", suffix=".saving", dir=directory or ".")
    f: IO | None = None
    try:
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except FileNotFoundError:
            mode = 0o666 & ~_umask()
        os.fchmod(fd, mode)
        if text:
            kwargs.setdefault("newline", "\n")
            f = open(fd, "w", encoding=encoding, **kwargs)  # noqa: SIM115
        else:
            f = open(fd, "wb", **kwargs)  # noqa: SIM115
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if f is None:
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class SafeContentsManager(AsyncLargeFileManager):
    """JupyterLab's default contents manager with replace-on-success saves and 507 when full."""

    @contextlib.contextmanager
    def atomic_writing(self, os_path: str, *args: Any, **kwargs: Any) -> Iterator[IO]:
        directory = os.path.dirname(os_path) or "."
        if not self.use_atomic_writing or (
            os.path.isfile(os_path) and not os.access(directory, os.W_OK)
        ):
            # no temporary file possible next to it: Jupyter Server's in-place write
            with super().atomic_writing(os_path, *args, **kwargs) as f:
                yield f
            return
        kwargs.pop("log", None)
        with self.perm_to_403(os_path), replacing(os_path, *args, **kwargs) as f:
            yield f

    async def save(self, model: dict[str, Any], path: str = "") -> dict[str, Any]:
        try:
            return await super().save(model, path)
        except HTTPError as exc:
            if not is_disk_full(exc):
                raise
            self.log.warning("saving %s: the disk is full", path)
            chunked = model.get("chunk") not in (None, 1)
            raise HTTPError(
                507,
                f"Could not save {path}: no space left on the disk (or the storage quota is "
                "used up). "
                + (
                    "The upload is incomplete. "
                    if chunked
                    else "The previously saved version of the file is unchanged. "
                )
                + "Free some space (delete or move files), then save again.",
            ) from exc


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "cscale_extensions.singleuser.contents"}]


def _link_jupyter_server_extension(serverapp: Any) -> None:
    if "contents_manager_class" not in serverapp.config.get("ServerApp", {}):
        serverapp.contents_manager_class = SafeContentsManager


def _load_jupyter_server_extension(serverapp: Any) -> None:
    serverapp.log.info(
        "cscale contents: %s saves by replace-on-success",
        type(serverapp.contents_manager).__name__,
    )
