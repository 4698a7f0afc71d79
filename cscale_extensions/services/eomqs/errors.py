"""JSON errors of EO-MQS: ``{"code": ..., "description": ...}``, never a stack trace."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("cscale.eomqs")


class ApiError(Exception):
    """An error answered to the client as JSON with an HTTP status."""

    def __init__(self, status: int, code: str, description: str, **extra: Any):
        super().__init__(description)
        self.status = status
        self.code = code
        self.description = description
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "description": self.description, **self.extra}


def bad_request(code: str, description: str) -> ApiError:
    return ApiError(400, code, description)


def _json(status: int, body: dict[str, Any]) -> JSONResponse:
    return JSONResponse(body, status_code=status)


def install(app: FastAPI) -> None:
    """Answer every error as JSON: ours, FastAPI's validation, HTTP errors and the unexpected."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _json(exc.status, exc.body())

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors()[:5]:
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "request"
            parts.append(f"{where}: {err.get('msg', 'invalid')}")
        return _json(400, {"code": "InvalidParameter", "description": "; ".join(parts)})

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "NotFound", 405: "MethodNotAllowed", 413: "RequestTooLarge"}
        code = codes.get(exc.status_code, "HTTPError")
        return _json(exc.status_code, {"code": code, "description": str(exc.detail)})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _json(500, {"code": "InternalError", "description": "unexpected server error"})
