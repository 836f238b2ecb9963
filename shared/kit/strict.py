"""Strict input, the same over HTTP and over the streams (docs/security.md "Input"):

- JSON: a duplicate key, NaN/Infinity, a number in exponent form (`1.0e2`) or a NUL character is refused; other
  numbers are exact Decimals, never floats;
- HTTP: a body sent to a route must be JSON (`application/json` or `application/*+json`): anything else is 415;
  an invalid JSON body is 422 with the one error shape `{"detail": [{"loc", "field", "msg", "type"}]}`;
- types: amounts as plain decimal strings (no `1_000`, no spaces, no exponent), booleans only `true`/`false`,
  dates only `YYYY-MM-DD` (not a date-time), reasons never blank."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from fastapi.responses import JSONResponse

from safe_procurement.shared.contracts.formats import (  # the field types, with the wire contracts
    date_text,
    decimal_text,
    not_blank,
)

BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class StrictJsonError(ValueError):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise StrictJsonError("duplicate_key", f"duplicate key {key!r}")
        out[key] = value
    return out


def _constant(name: str) -> Any:
    raise StrictJsonError("non_finite_number", f"{name} is not a number")


def _number(text: str) -> Decimal:
    if "e" in text or "E" in text:
        raise StrictJsonError("number_format", f"{text} is in exponent form: write the plain decimal")
    return Decimal(text)


def loads(raw: bytes | str) -> Any:
    """JSON as the platform accepts it; StrictJsonError names what is wrong."""
    data = raw.encode() if isinstance(raw, str) else raw
    if b"\x00" in data or b"\\u0000" in data:
        raise StrictJsonError("nul_character", "NUL characters (\\u0000) are not accepted in any field")
    try:
        return json.loads(data, object_pairs_hook=_pairs, parse_constant=_constant, parse_float=_number,
                          parse_int=_int)
    except StrictJsonError:
        raise
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise StrictJsonError("json_invalid", f"invalid JSON: {e}") from None


def _int(text: str) -> int:
    if len(text) > 40:  # far above any amount; refuses a megabyte of digits before Python parses it
        raise StrictJsonError("number_format", "number too long")
    return int(text)


# --- HTTP ---------------------------------------------------------------------------------------------------


def _problem(kind: str, message: str, loc: list[str] | None = None) -> dict[str, Any]:
    loc = loc or ["body"]
    return {"detail": [{"loc": loc, "field": ".".join(p for p in loc if p != "body") or "body", "msg": message,
                        "type": kind}]}


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


class StrictJson:
    """ASGI: a request body must be strict JSON (415 / 422 as above) before any route sees it."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        content_type = ""
        for name, value in scope.get("headers") or ():
            if name == b"content-type":
                content_type = value.decode("latin-1")
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                await self.app(scope, _replay([message]), send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if body or content_type:
            if not _is_json(content_type):
                await JSONResponse(_problem("unsupported_media_type", "the body must be application/json",
                                            ["header", "content-type"]), status_code=415)(scope, receive, send)
                return
            if body.strip():
                try:
                    loads(body)
                except StrictJsonError as e:
                    await JSONResponse(_problem(e.kind, str(e)), status_code=422)(scope, receive, send)
                    return
        await self.app(scope, _replay([{"type": "http.request", "body": body, "more_body": False}], receive), send)


def _replay(messages: list[dict[str, Any]], then: Any = None) -> Any:
    pending = list(messages)

    async def receive() -> Any:
        if pending:
            return pending.pop(0)
        if then is not None:
            return await then()
        return {"type": "http.disconnect"}

    return receive


__all__ = ["StrictJson", "StrictJsonError", "date_text", "decimal_text", "loads", "not_blank"]
