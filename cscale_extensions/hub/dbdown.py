"""The hub's answer while its database is unreachable: 503 and a clear message.

JupyterHub looks the user up in its database on every request; when the database is gone
(PostgreSQL stopped, network cut) that lookup fails, JupyterHub logs it and carries on as if
nobody were signed in: a valid API token gets ``403 {"message": null}``, a signed-in browser
is sent to the login page, other failures are a bare 500. :func:`install` (called by the hub
configuration) makes any request that hits the lost database a 503 with ``Retry-After`` and a
message saying what happened; nothing else changes. User servers keep running meanwhile and
the hub recovers by itself when the database is back (its sessions are rolled back).
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any

from sqlalchemy import exc as sa_exc
from tornado import web

MESSAGE = (
    "The hub cannot reach its database right now. Your running servers and files are not "
    "affected; please try again in a minute."
)
RETRY_AFTER = "30"


def database_unreachable(exc: BaseException | None) -> bool:
    """Whether ``exc`` means the database could not be reached (not a bad query)."""
    if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError)):
        return True
    return isinstance(exc, sa_exc.DBAPIError) and bool(exc.connection_invalidated)


def unavailable() -> web.HTTPError:
    err = web.HTTPError(503, MESSAGE)
    err.headers = {"Retry-After": RETRY_AFTER}  # JupyterHub's error pages send these
    return err


def install() -> None:
    """Patch JupyterHub's BaseHandler (once) as described in the module docstring."""
    from jupyterhub.handlers.base import BaseHandler

    if getattr(BaseHandler, "_cscale_dbdown", False):
        return
    BaseHandler._cscale_dbdown = True
    get_current_user = BaseHandler.get_current_user
    prepare = BaseHandler.prepare
    send_error = BaseHandler.send_error

    @functools.wraps(get_current_user)
    async def get_current_user_noting_db(self: Any) -> Any:
        try:
            return await get_current_user(self)
        except Exception as exc:
            if database_unreachable(exc):
                self._cscale_db_unreachable = True
            raise

    @functools.wraps(prepare)
    async def prepare_or_503(self: Any) -> None:
        await prepare(self)
        if getattr(self, "_cscale_db_unreachable", False):
            raise unavailable()

    @functools.wraps(send_error)
    def send_error_503(self: Any, status_code: int = 500, **kwargs: Any) -> None:
        exc_info = kwargs.get("exc_info")
        if status_code == 500 and exc_info and database_unreachable(exc_info[1]):
            with contextlib.suppress(Exception):
                self.db.rollback()
            kwargs["exc_info"] = (web.HTTPError, unavailable(), exc_info[2])
            status_code = 503
        send_error(self, status_code, **kwargs)

    BaseHandler.get_current_user = get_current_user_noting_db
    BaseHandler.prepare = prepare_or_503
    BaseHandler.send_error = send_error_503
