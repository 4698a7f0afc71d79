"""Pre-started kernels: the first notebook a participant opens gets a kernel that is already up.

A pre-warmed workshop server is ready in a second, but the participant's first cell still
waited for a kernel to start (an ipykernel process: a second or two of CPU, many more when a
room of people arrive at once on a small machine). :class:`PooledKernelManager` is the
server's kernel manager with a small pool: as soon as the server runs it starts
``pool_size`` kernels of ``pool_kernel_name`` (in the server's root directory); the next
request for a new kernel of that spec (a notebook's session, ``POST /api/kernels``) gets one
of them, moved to the directory the request asks for, instead of a fresh start. A request that
arrives while the pool's kernel is still starting waits for that one rather than starting
another. Taken kernels are not replaced: the pool serves the first notebooks, later ones start
kernels as usual (so an unused server costs one idle kernel, not a growing number).

Everything here runs in the user's own server, as the user: the kernels are its children like
any kernel it starts. Pooled kernels are left out of the kernel list (the participant did not
start them, and JupyterLab would show them as running); the directory move is a silent
``os.chdir`` for Python kernels (no history, no execution count), other languages are handed
over only when the directory matches. The hub turns it on for workshop participants
(``workshop.prestarted_kernels``, :mod:`cscale_extensions.workshop.hub`) with::

    --ServerApp.kernel_manager_class=cscale_extensions.singleuser.kernelpool.PooledKernelManager
    --PooledKernelManager.pool_size=1
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from jupyter_server._tz import utcnow
from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from jupyter_server.utils import ApiPath
from tornado.ioloop import IOLoop
from traitlets import Integer, Unicode

#: the dotted name the hub passes as ``ServerApp.kernel_manager_class``
CLASS = f"{__name__}.PooledKernelManager"
#: how long the directory move of a handed-over kernel may take before it is not handed over
CHDIR_TIMEOUT = 30


class PooledKernelManager(AsyncMappingKernelManager):
    """A mapping kernel manager that hands out pre-started kernels (module docstring)."""

    pool_size = Integer(0, config=True, help="Kernels started as soon as the server runs.")
    pool_kernel_name = Unicode(
        "", config=True, help="Kernel spec of the pre-started kernels ('' is the default one)."
    )

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self._pool: list[str] = []
        self._filling: asyncio.Task | None = None
        if self.pool_size > 0:
            IOLoop.current().add_callback(self._start_filling)

    @property
    def pool_spec(self) -> str:
        return self.pool_kernel_name or self.default_kernel_name

    @property
    def pooled(self) -> list[str]:
        """Ids of the pre-started kernels not handed out yet."""
        return [k for k in self._pool if k in self]

    def _start_filling(self) -> None:
        self._filling = asyncio.ensure_future(self.fill_pool())

    async def fill_pool(self) -> None:
        while len(self.pooled) < self.pool_size:
            t = time.monotonic()
            try:
                kid = await super().start_kernel(kernel_name=self.pool_spec, path="")
            except Exception:
                self.log.exception("could not pre-start a %s kernel", self.pool_spec)
                return
            self._pool.append(kid)
            self.log.info(
                "pre-started %s kernel %s in %.1fs", self.pool_spec, kid, time.monotonic() - t
            )

    def list_kernels(self) -> list[dict[str, Any]]:
        hidden = set(self._pool)
        return [k for k in super().list_kernels() if k["id"] not in hidden]

    async def start_kernel(
        self, *, kernel_id: str | None = None, path: ApiPath | None = None, **kwargs: Any
    ) -> str:
        if kernel_id is None and (kwargs.get("kernel_name") or self.default_kernel_name) == (
            self.pool_spec
        ):
            kid = await self._take(path)
            if kid is not None:
                return kid
        return await super().start_kernel(kernel_id=kernel_id, path=path, **kwargs)

    async def _take(self, path: ApiPath | None) -> str | None:
        """A pooled kernel, in ``path``'s directory, or None (start a fresh one)."""
        if not self.pooled and self._filling is not None and not self._filling.done():
            await asyncio.shield(self._filling)
        while self._pool:
            kid = self._pool.pop(0)
            if kid not in self:
                continue
            kernel = self.get_kernel(kid)
            if not await kernel.is_alive():
                continue
            if path is not None and not await self._move(kid, self.cwd_for_path(path)):
                await self.shutdown_kernel(kid, now=True)
                continue
            kernel.last_activity = utcnow()
            self.log.info("handed over pre-started kernel %s", kid)
            return kid
        return None

    async def _move(self, kid: str, cwd: str) -> bool:
        """Make kernel ``kid`` work in ``cwd`` (a silent chdir; Python kernels only)."""
        if cwd == self.cwd_for_path(""):
            return True
        try:
            language = self.kernel_spec_manager.get_kernel_spec(self.pool_spec).language
        except Exception:
            language = ""
        if language != "python":
            return False
        client = self.get_kernel(kid).client()
        client.start_channels()
        try:
            msg_id = client.execute(
                f"__import__('os').chdir({json.dumps(cwd)})", silent=True, store_history=False
            )
            deadline = time.monotonic() + CHDIR_TIMEOUT
            while (left := deadline - time.monotonic()) > 0:
                reply = await client.get_shell_msg(timeout=left)
                if reply["parent_header"].get("msg_id") == msg_id:
                    return reply["content"].get("status") == "ok"
        except Exception as exc:
            self.log.warning("pre-started kernel %s could not move to %s: %s", kid, cwd, exc)
        finally:
            client.stop_channels()
        return False
