"""Limits applied before a body is parsed: its size, and request rates.

Body size. ``BodyLimitMiddleware`` answers 413 to any request (every route, known or not)
whose declared ``Content-Length`` is over the limit, without the app reading a byte of the body
(uvicorn discards the rest of a moderately oversized one, see ``DRAIN_LIMIT``).
``read_body`` reads a body the route needs, counting as it goes, so a chunked body stops being
read at the first chunk past the limit. ``Content-Encoding: gzip`` is accepted (when enabled) and
decompressed with a bounded output: a gzip bomb costs at most ``max_body`` bytes of memory and
gets 413. Any other encoding gets 415.

Rates. Fixed one-minute windows counted in the database table ``rate_counters``, so several
collector processes behind a load balancer share them; nothing about rates lives in a process.
A request over its limit gets 429 with ``Retry-After`` (seconds to the next window).
"""

from __future__ import annotations

import math
import random
import time
import zlib
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from starlette.requests import ClientDisconnect, Request

from netcheck.collector.db import dialect_insert, execute_hot, rate_counters
from netcheck.collector.validate import ApiError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

WINDOW_S = 60
#: one request in this many also deletes counters of past windows
_CLEANUP_ONE_IN = 200


#: A refused body up to this size is still received and thrown away (by uvicorn, at no memory
#: cost), so that a client that writes its whole body before reading sees the 413 instead of a
#: connection reset. Past it, or with no declared length, the connection is closed at once.
DRAIN_LIMIT = 16 * 1024 * 1024


def too_large(max_body: int, close: bool = True) -> ApiError:
    headers = {"Connection": "close"} if close else {}
    return ApiError("body_too_large", f"request body is larger than {max_body} bytes", status=413,
                    headers=headers)


def declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class BodyLimitMiddleware:
    """413 for a declared ``Content-Length`` over the limit, on every route, before reading."""

    def __init__(self, app: ASGIApp, max_body: int, error_body: Callable[[ApiError], bytes]) -> None:
        self.app = app
        self.max_body = max_body
        self.error_body = error_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            length = declared_length(scope)
            if length is not None and length > self.max_body:
                body = self.error_body(too_large(self.max_body))
                headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
                if length > self.max_body + DRAIN_LIMIT:
                    headers.append((b"connection", b"close"))
                await send({"type": "http.response.start", "status": 413, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


async def read_body(request: Request, max_body: int, accept_gzip: bool) -> bytes:
    """The request body, at most ``max_body`` bytes on the wire and after decompression."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", "") and not (encoding == "gzip" and accept_gzip):
        accepted = "identity or gzip" if accept_gzip else "identity"
        raise ApiError("unsupported_encoding", f"Content-Encoding {encoding[:32]!r} is not accepted "
                         f"(use {accepted})", status=415)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body:
                # only a body without a declared length can get here: it may never end, so close
                raise too_large(max_body)
            chunks.append(chunk)
    except ClientDisconnect as exc:  # the agent gave up mid-body: nothing was stored, nobody to answer
        raise ApiError("client_disconnected", "the client went away before sending the whole body") from exc
    raw = b"".join(chunks)
    return gunzip_bounded(raw, max_body) if encoding == "gzip" else raw


def gunzip_bounded(data: bytes, max_body: int) -> bytes:
    """Decompress one gzip member, refusing (413) to produce more than ``max_body`` bytes."""
    decomp = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = decomp.decompress(data, max_body + 1)
    except zlib.error as exc:
        raise ApiError("invalid_encoding", f"body is not valid gzip: {exc}") from exc
    if len(out) > max_body:  # the wire body was read whole: the connection is kept
        raise ApiError("body_too_large", f"the gzip body inflates to more than {max_body} bytes (a "
                       "decompression bomb, or a report over the limit); nothing was stored", status=413)
    if not decomp.eof:
        raise ApiError("invalid_encoding", "gzip body is truncated")
    if decomp.unused_data:
        raise ApiError("invalid_encoding", "gzip body has trailing data")
    return out


@dataclass(frozen=True)
class Limit:
    bucket: str
    per_minute: int


@dataclass(frozen=True)
class Verdict:
    limited: bool
    retry_after: int = 0
    bucket: str = ""


ALLOWED = Verdict(False)


def _upsert(dialect: str) -> Any:
    stmt = dialect_insert(dialect, rate_counters).values(
        bucket=sa.bindparam("bucket"), minute=sa.bindparam("minute"), count=1)
    return stmt.on_conflict_do_update(
        index_elements=[rate_counters.c.bucket, rate_counters.c.minute],
        set_={"count": rate_counters.c.count + 1},
    ).returning(rate_counters.c.count)


class RateLimiter:
    """Counts hits per bucket and window in the database; the caller owns the transaction.

    Counting happens even when a request is refused, so the caller must commit, not roll back.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._stmts: dict[str, Any] = {}

    def window(self) -> int:
        return int(self._clock() // WINDOW_S)

    def refuse(self) -> Verdict:
        """A refusal until the current window ends."""
        now = self._clock()
        return Verdict(True, max(1, math.ceil((int(now // WINDOW_S) + 1) * WINDOW_S - now)))

    def _counting(self, conn: Connection) -> tuple[float, int, Any]:
        """The time, its window and the counting statement (now and then, old windows deleted first)."""
        now = self._clock()
        minute = int(now // WINDOW_S)
        dialect = conn.dialect.name
        stmt = self._stmts.get(dialect)
        if stmt is None:
            stmt = self._stmts[dialect] = _upsert(dialect)
        if random.randrange(_CLEANUP_ONE_IN) == 0:
            conn.execute(sa.delete(rate_counters).where(rate_counters.c.minute < minute - 1))
        return now, minute, stmt

    @staticmethod
    def _verdict(limit: Limit, count: int, now: float, minute: int) -> Verdict:
        if count > limit.per_minute:
            return Verdict(True, max(1, math.ceil((minute + 1) * WINDOW_S - now)), limit.bucket)
        return ALLOWED

    def hit(self, conn: Connection, *limits: Limit) -> Verdict:
        """Count one hit in each limit in turn; stop at (and report) the first one exceeded."""
        now, minute, stmt = self._counting(conn)
        for limit in limits:
            if limit.per_minute <= 0:
                continue
            ((count,),) = execute_hot(conn, stmt, {"bucket": limit.bucket[:160], "minute": minute})
            verdict = self._verdict(limit, count, now, minute)
            if verdict.limited:
                return verdict
        return ALLOWED

    def hit_each(self, conn: Connection, limits: Sequence[Limit]) -> list[Verdict]:
        """``hit`` of one limit for each request, in order, all counted in one statement (on
        PostgreSQL one round trip): the same verdicts as one ``hit`` after the other."""
        counted = [limit for limit in limits if limit.per_minute > 0]
        if not counted:
            return [ALLOWED] * len(limits)
        now, minute, stmt = self._counting(conn)
        rows = iter(execute_hot(conn, stmt, [{"bucket": limit.bucket[:160], "minute": minute} for limit in counted],
                                each=True))
        return [self._verdict(limit, next(rows)[0].count, now, minute) if limit.per_minute > 0 else ALLOWED
                for limit in limits]
