"""The collector web service: a Starlette ASGI app, built by ``create_app(settings)``.

Order of work for every API request, cheapest refusal first:

1. declared ``Content-Length`` over the limit: 413 (``BodyLimitMiddleware``, every route);
2. a query string: 400 (a token in a URL ends up in logs);
3. the token, then the device's rate limit; for a bad token, the client address's count of
   failed authentications: 429 / 401, in one short transaction (three statements) committed
   whatever the answer, without waiting for the disk (losing a counter in a crash is harmless).
   An upload whose token this process accepted in the last ``ACCEPTED_TTL_S`` seconds
   (``_Accepted``) skips that transaction: the same checks run in the store's (step 6), before
   its report is stored, and refuse it there (a token revoked or replaced since: 401, a rate: 429);
4. the body is read with a running count (413) and decompressed with a bound (413);
5. strict JSON parsing (400), a ``device_id`` that is not the token's (403), schema (400):
   CPU work, done on the event loop for a small body (``INLINE_PREPARE_MAX``: a hand-off to a
   thread would cost more) and in one worker thread for a large one; a report sent in
   the reduced form (``Content-Type: application/vnd.netcheck.reduced+json``, the agent's usual
   upload) is checked against the reduced schema and stored as it came;
6. one durable transaction stores the report, in a worker thread, together with the other
   uploads waiting at that moment (``_Batcher``: a group commit; while another such transaction
   runs, the next waits up to ``STORE_LINGER_S`` for ``STORE_FILL`` uploads); the
   acknowledgement is sent only after it committed.

A database that cannot be reached, is locked past the timeout or refuses writes gives 503 with
``Retry-After``, never a 2xx. Errors are always ``{"error": {"code", "message", "field"}}``;
tracebacks go to the log, not to the client.

Besides requests, each process deletes the reports past the retention period now and then
(``prune_forever``), then compacts what arrived since (``store.compact_all``), in short
transactions of its own; on SQLite it checkpoints the write-ahead log every second
(``checkpoint_forever``), so that no upload's commit does; and, when an app registration is
configured, takes its turn for the lease that lets one process poll Microsoft service health
(``health.poll_forever``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gc
import hashlib
import ipaddress
import json
import logging
import random
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from typing import Any, Generic, TypeVar

import anyio
import anyio.to_thread
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from netcheck import __version__
from netcheck.collector import compact, health, site_facts, store
from netcheck.collector.auth import bearer_token
from netcheck.collector.db import (
    checkpoint_wal,
    head_revision,
    make_engine,
    no_commit_checkpoints,
    relax_durability,
    relaxed_transaction,
)
from netcheck.collector.limits import ALLOWED, BodyLimitMiddleware, Limit, RateLimiter, Verdict, read_body
from netcheck.collector.openapi import build_document
from netcheck.collector.settings import Settings
from netcheck.collector.supervision import follow_master
from netcheck.collector.validate import ApiError, Validators, parse_timestamp, strict_loads
from netcheck.collector.web import views as dashboard
from netcheck.render.reduced import REDUCED_CONTENT_TYPE

log = logging.getLogger(__name__)

T = TypeVar("T")
Item = TypeVar("Item")
R = TypeVar("R")
Endpoint = Callable[[Request], Awaitable[Response]]

#: seconds an agent should wait after a 503
DB_RETRY_AFTER = 15
#: requests served by one transaction at most (``_Batcher``)
BATCH_LIMIT = 64
#: while another of its transactions runs, the store's next batch waits this long at most for
#: ``STORE_FILL`` uploads before it goes (``_Batcher``'s ``linger``): a report costs the collector
#: and the database about half as much CPU in a batch of 16 as in one of 4 (bench_store_path.py)
STORE_LINGER_S = 0.005
STORE_FILL = 16
#: an upload's JSON up to this size is checked on the event loop (a reduced report, 8 KiB: 0.2 ms of
#: CPU, less than handing it to a thread and back); a larger one (a full report, 240 KB: a few
#: milliseconds) in the one preparing thread (``_Api._prepare_slot``)
INLINE_PREPARE_MAX = 32 * 1024
#: seconds a token the gate accepted lets this process read an upload before checking it again
#: (``_Accepted``): the check itself then runs in the store's transaction
ACCEPTED_TTL_S = 300.0
#: tokens ``_Accepted`` keeps at most (the oldest go first)
ACCEPTED_MAX = 100_000
#: seconds between two checkpoints of SQLite's write-ahead log by each process (``db.checkpoint_wal``)
WAL_CHECKPOINT_S = 1.0
#: see tune_gc()
GC_THRESHOLDS = (50_000, 20, 100)
_CREDENTIAL_WORDS = ("token", "auth", "key", "secret", "bearer", "password")



def unauthorized() -> ApiError:
    """One answer for a missing, malformed, unknown or revoked token: nothing to tell them apart."""
    return ApiError("unauthorized", "missing, malformed, unknown or revoked device token", status=401,
                    headers={"WWW-Authenticate": 'Bearer realm="netcheck"'})


def error_body(exc: ApiError) -> bytes:
    err: dict[str, str] = {"code": exc.code, "message": exc.message}
    if exc.field is not None:
        err["field"] = exc.field
    return json.dumps({"error": err}, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def error_response(exc: ApiError) -> Response:
    return Response(error_body(exc), status_code=exc.status, headers=exc.headers, media_type="application/json")


def _db_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError | sa.exc.TimeoutError):
        return True
    return isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated


def _json_endpoint(fn: Endpoint) -> Endpoint:
    """Turn refusals and database outages into JSON answers."""

    async def endpoint(request: Request) -> Response:
        try:
            return await fn(request)
        except ApiError as exc:
            return error_response(exc)
        except sa.exc.SQLAlchemyError as exc:
            if not _db_unavailable(exc):
                raise
            log.warning("database unavailable: %s", str(exc).splitlines()[0][:300])
            return error_response(ApiError("database_unavailable", "the database is unavailable; nothing was "
                                           "stored, retry later", status=503,
                                           headers={"Retry-After": str(DB_RETRY_AFTER)}))

    return endpoint


def prepare_upload(validators: Validators, device_id: str, raw: bytes, *, reduced: bool = False) -> store.Incoming:
    """Parse and check an upload (CPU only: the app runs a small one on the event loop, a large one
    in its preparing thread).

    ``reduced``: the report is in the reduced form (``netcheck.render.reduced``), checked against
    its schema and stored as it came (``compact.FORM_REDUCED``).
    """
    parsed = strict_loads(raw, watch_key="device_id", keep="report")
    if any(v != device_id for v in parsed.watched):
        raise ApiError("device_mismatch", "device_id in the body is not the device of this token",
                       field="device_id", status=403)
    body = parsed.value
    validators.envelope.check(body)
    report = body["report"]
    (validators.reduced_report if reduced else validators.report).check(report)
    agent = body["agent"]
    encoded = parsed.kept
    assert encoded is not None  # the envelope schema requires the report, so strict_loads kept it
    return store.Incoming(
        report_id=str(report["report_id"]), verdict=str(report["verdict"]), exit_code=int(report["exit_code"]),
        tool_version=str(report["tool"]["version"]), workloads=store.workload_rows(report["workloads"]),
        report_lz4=store.encode_report(encoded, reduced=reduced), body_sha256=hashlib.sha256(encoded).hexdigest(),
        form=compact.FORM_REDUCED if reduced else compact.FORM_LZ4,
        outage_verdict=compact.outage_verdict(report),
        measured_at=parse_timestamp(report["measured_at"], "report.measured_at"),
        sent_at=parse_timestamp(agent["sent_at"], "agent.sent_at"),
        seq=int(agent["seq"]), dropped=int(agent["dropped"]), spool_full=bool(agent["spool_full"]),
        sweep_id=body.get("sweep_id"), findings=store.finding_rows(report["findings"]),
        catalog=(str(report["catalog"]["instance"]), str(report["catalog"]["version"])),
        facts_entry=site_facts.entry(report),
    )


def _limited(verdict: Verdict) -> ApiError:
    return ApiError("rate_limited", "too many requests; retry after the Retry-After delay", status=429,
                    headers={"Retry-After": str(verdict.retry_after)})


class _Accepted:
    """Tokens this process's gate accepted lately, with their device: a pre-filter, not a check.

    An upload whose token is here skips the gate's own transaction (and the hand-off to a thread
    and back for it): its body is read and checked at once, and the gate's work (the token looked
    up again, its first use, the device's rate count, an address's failures) runs inside the
    store's transaction, before the report is stored (``_Api._store_batch``). A token that is not
    here (unknown, never seen by this process, or accepted more than ``ttl`` seconds ago) goes
    through the gate first, as before, so a client without a valid token still gets its 401
    before any body is read or decoded. A token refused in the store's transaction (revoked,
    replaced by a re-enrollment, rate-limited) is dropped, so it goes through the gate again.
    """

    def __init__(self, ttl: float = ACCEPTED_TTL_S, limit: int = ACCEPTED_MAX,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._limit = limit
        self._clock = clock
        self._tokens: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()  # the event loop adds, a store's thread drops

    def device(self, token: str | None) -> str | None:
        """The device of a token accepted less than ``ttl`` seconds ago, else None."""
        if token is None:
            return None
        with self._lock:
            found = self._tokens.get(token)
            if found is None:
                return None
            if found[1] < self._clock():
                del self._tokens[token]
                return None
            return found[0]

    def add(self, token: str | None, device_id: str) -> None:
        if token is None:
            return
        with self._lock:
            self._tokens.pop(token, None)  # to the end: the oldest stay first
            self._tokens[token] = (device_id, self._clock() + self._ttl)
            while len(self._tokens) > self._limit:
                del self._tokens[next(iter(self._tokens))]

    def drop(self, token: str | None) -> None:
        if token is not None:
            with self._lock:
                self._tokens.pop(token, None)


#: an upload for the store: its device, the prepared report, and the (client address, token) whose
#: gate runs in the store's transaction (``_Accepted``), or None when the gate already ran
Upload = tuple[str, store.Incoming, tuple[str, str | None] | None]


class _Batcher(Generic[Item, R]):
    """Group commit: requests waiting for the database go to it together, in one transaction
    (``_Api._gate_batch``: token and rate limits; ``_Api._store_batch``: the reports).

    A request that finds no transaction running goes at once, alone; while ``slots`` transactions
    are running, the requests that arrive wait, and go together in the next (at most ``limit``).
    With ``linger``, while some transaction runs and a slot is free, the waiting requests go when
    ``fill`` of them are waiting or the first has waited ``linger`` seconds, whichever is first,
    rather than each taking the free slot alone. So an idle collector answers as fast as before and
    a busy one commits (and, for reports, waits for the disk) once per batch instead of once per
    request. Each request still gets its own answer (a result, or the ``ApiError`` it is refused
    with), only after the transaction committed.
    """

    def __init__(self, run: Callable[[list[Item]], Awaitable[list[R | ApiError]]], *, slots: int,
                 limit: int = BATCH_LIMIT, linger: float = 0.0, fill: int = BATCH_LIMIT) -> None:
        self._run = run
        self._slots = slots
        self._limit = limit
        self._linger = linger
        self._fill = min(fill, limit)
        self._busy = 0
        self._waiting: list[tuple[Item, asyncio.Future[R | ApiError]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        #: when the first of the waiting requests came (the loop's clock), and the timer for it
        self._first = 0.0
        self._timer: asyncio.TimerHandle | None = None

    async def submit(self, item: Item) -> R:
        """The item's result; raises its refusal (``ApiError``) or the database's error."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[R | ApiError] = loop.create_future()
        if not self._waiting:
            self._first = loop.time()
        self._waiting.append((item, done))
        self._start()
        result = await done
        if isinstance(result, ApiError):
            raise result
        return result

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        while self._waiting and self._busy < self._slots:
            if self._busy and self._linger and len(self._waiting) < self._fill:
                wait = self._first + self._linger - loop.time()
                if wait > 0:
                    if self._timer is None:
                        self._timer = loop.call_later(wait, self._wake)
                    return
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            batch, self._waiting = self._waiting[:self._limit], self._waiting[self._limit:]
            self._first = loop.time()
            self._busy += 1
            task = loop.create_task(self._flush(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _wake(self) -> None:
        self._timer = None
        self._start()

    async def _flush(self, batch: list[tuple[Item, asyncio.Future[R | ApiError]]]) -> None:
        try:
            results = await self._run([item for item, _ in batch])
        except Exception as exc:  # the database's: every request of the batch gets it (503)
            for _, done in batch:
                if not done.done():
                    done.set_exception(exc)
        else:
            for (_, done), result in zip(batch, results, strict=True):
                if not done.done():  # not a client that went away
                    done.set_result(result)
        finally:
            self._busy -= 1
            self._start()


class _Api:
    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self.limiter = RateLimiter()
        self.validators = Validators()
        self.head = head_revision()
        self.openapi = json.dumps(build_document(), separators=(",", ":")).encode("utf-8")
        # Threads that may hold a database connection at once: queue in the event loop rather
        # than time out waiting for the pool.
        pool = engine.pool.size() if isinstance(engine.pool, sa.pool.QueuePool) else 8
        self._db_slots = anyio.CapacityLimiter(max(1, pool + settings.db_max_overflow))
        # Full uploads are parsed, validated and encoded (a few milliseconds of CPU each) in one
        # worker thread at a time, off the event loop: under a flood of them the loop still answers
        # the dashboard's pages at once, and they share the CPU with one upload, not a queue. Small
        # ones (``INLINE_PREPARE_MAX``) cost less than the hand-off and are checked on the loop.
        self._prepare_slot = anyio.CapacityLimiter(1)
        slots = max(1, pool + settings.db_max_overflow)
        # SQLite lets one transaction write at a time. Its other writers wait in its busy handler,
        # which polls with growing sleeps (up to 100 ms): a writer that has waited a while can lose
        # to newcomers again and again (with two processes, three threads each could wait so). In a
        # process, the gate's and the store's batches take turns on this lock instead (woken the
        # moment it is free), one batch of each at a time: uploads that arrive meanwhile join the
        # next batch, not a second thread queued for the lock.
        self._writer = threading.Lock() if engine.dialect.name == "sqlite" else None
        if self._writer:  # the log is checkpointed by checkpoint_forever, not in an upload's commit
            no_commit_checkpoints(engine)
        gate_slots, store_slots = (1, 1) if self._writer else (max(1, slots // 2), max(1, slots - slots // 2))
        self.gates: _Batcher[tuple[str, str | None], str] = _Batcher(partial(self._db, self._gate_batch),
                                                                       slots=gate_slots)
        self.stores: _Batcher[Upload, str] = _Batcher(partial(self._db, self._store_batch), slots=store_slots,
                                                      linger=STORE_LINGER_S, fill=STORE_FILL)
        self.accepted = _Accepted()

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` (one or two short transactions) in a worker thread.

        A pooled connection the database dropped (a restart, a failover) fails on first use;
        the idle connections are closed and the work is retried once on a fresh connection. That is safe
        because every call is transactional and idempotent, and cheaper than pinging the
        database before every checkout.
        """
        call = partial(fn, *args)
        try:
            return await anyio.to_thread.run_sync(call, limiter=self._db_slots)
        except sa.exc.DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
            log.warning("database connection lost; retrying on a new one")
            self.engine.pool.dispose()  # the other idle connections went with it (a restart, a failover)
            return await anyio.to_thread.run_sync(call, limiter=self._db_slots)

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """On SQLite, this process's turn to write (``_writer``); a 503 past the database timeout."""
        if self._writer is None:
            yield
            return
        if not self._writer.acquire(timeout=self.settings.db_timeout_s):
            raise sa.exc.TimeoutError("waited past the timeout for the database's write lock")
        try:
            yield
        finally:
            self._writer.release()

    # --- request helpers ------------------------------------------------------------------------

    def client_address(self, request: Request) -> str:
        header = self.settings.trusted_proxy_header
        if header:
            value = request.headers.get(header)
            if value:
                last = value.split(",")[-1].strip()
                try:
                    return str(ipaddress.ip_address(last))
                except ValueError:
                    pass
        return request.client.host if request.client else "unknown"

    @staticmethod
    def reject_query(request: Request) -> None:
        if not request.url.query:
            return
        names = [k.lower() for k in request.query_params]
        if "nct_" in request.url.query or any(w in name for name in names for w in _CREDENTIAL_WORDS):
            raise ApiError("token_in_query", "credentials in a URL are refused: send the token in an "
                           "Authorization: Bearer header")
        raise ApiError("unexpected_query", "this route takes no query parameters")

    @staticmethod
    def require_json(request: Request, *, reduced: bool = False) -> bool:
        """Check the body's media type; True for a reduced report (``REDUCED_CONTENT_TYPE``, where
        ``reduced`` allows it)."""
        mime, _, params = request.headers.get("content-type", "").partition(";")
        mime = mime.strip().lower()
        is_reduced = reduced and mime == REDUCED_CONTENT_TYPE
        if mime != "application/json" and not is_reduced:
            also = f" or {REDUCED_CONTENT_TYPE}" if reduced else ""
            raise ApiError("unsupported_media_type", f"send the body as application/json{also}", status=415)
        for param in params.split(";"):
            name, _, value = param.partition("=")
            if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in ("utf-8", "utf8"):
                raise ApiError("unsupported_media_type", "the body must be UTF-8", status=415)
        return is_reduced

    async def body(self, request: Request) -> bytes:
        self.require_json(request)
        return await read_body(request, self.settings.max_body, self.settings.accept_gzip)

    # --- gates (run in a worker thread, one committed transaction each) --------------------------

    def _gate(self, conn: Connection, client: str, token: str | None, now: dt.datetime, *,
              relax: bool = True) -> str | ApiError:
        """The token's device, after its own rate limit; for a bad token, the address's failures.

        The per-address limit counts failed authentications (token guessing, a broken agent)
        and applies to them only: a request with a valid token is limited per device, so an
        office behind one NAT address is never throttled because strangers (or one broken
        laptop) sent bad tokens from it, and a noisy device is throttled by its own limit.
        A refusal is returned, not raised: the counts it made are committed all the same.

        ``relax``: the transaction's commit need not wait for the disk (the gate's own); False
        inside the store's transaction, whose commit must.
        """
        s = self.settings
        bucket = f"authfail:{client}"
        found = store.lookup_token(conn, token, bucket, self.limiter.window(), relax=relax)
        if found.device_id is not None:
            store.mark_used(conn, found, now)
            verdict = self.limiter.hit(conn, Limit(f"dev:{found.device_id}", s.rate_device))
        elif s.rate_address and found.failures >= s.rate_address:
            verdict = self.limiter.refuse()
        else:
            verdict = ALLOWED  # this one gets 401; the failure counts towards the next
            self.limiter.hit(conn, Limit(bucket, s.rate_address))
        if verdict.limited:
            return _limited(verdict)
        if found.device_id is None:
            return unauthorized()
        return found.device_id

    def _gates(self, conn: Connection, batch: Sequence[tuple[str, str | None]], now: dt.datetime, *,
               relax: bool = True) -> list[str | ApiError]:
        """``_gate`` for each request of a batch, in order, with the same answers: the token
        lookups in one statement, the known devices' rate counts in another (on PostgreSQL a round
        trip each, not two per request); a request with an unknown token goes through ``_gate``
        again after them (its address's failure count must see the ones before it). ``relax`` as
        for ``_gate``."""
        window = self.limiter.window()
        found = store.lookup_tokens(conn, [(token, f"authfail:{client}") for client, token in batch], window,
                                    relax=relax)
        # device order: batches that run at once (two processes' gates, a store's) count the same
        # devices' rows in the same order, rather than deadlock
        known = sorted((i for i, f in enumerate(found) if f.device_id is not None),
                       key=lambda i: found[i].device_id or "")
        for i in known:
            store.mark_used(conn, found[i], now)
        verdicts = self.limiter.hit_each(conn, [Limit(f"dev:{found[i].device_id}", self.settings.rate_device)
                                                for i in known])
        out: list[str | ApiError | None] = [None] * len(batch)
        for i, verdict in zip(known, verdicts, strict=True):
            out[i] = _limited(verdict) if verdict.limited else found[i].device_id
        return [self._gate(conn, *batch[i], now, relax=relax) if answer is None else answer
                for i, answer in enumerate(out)]

    def _gate_batch(self, batch: list[tuple[str, str | None]]) -> list[str | ApiError]:
        """``_gate`` for (client address, token) pairs, in one short transaction committed whatever
        the answers, without waiting for the disk (``relaxed_transaction``); if it fails (a deadlock
        between two batches), one transaction each."""
        with self._writing():
            if len(batch) > 1:
                try:
                    with relaxed_transaction(self.engine) as conn:
                        return self._gates(conn, batch, store.utcnow())
                except sa.exc.DBAPIError as exc:
                    if exc.connection_invalidated:
                        raise
            out: list[str | ApiError] = []
            for client, token in batch:
                with relaxed_transaction(self.engine) as conn:
                    out.append(self._gate(conn, client, token, store.utcnow()))
            return out

    async def authenticated(self, request: Request) -> str:
        self.reject_query(request)
        token = bearer_token(request.headers.get("authorization"))
        device_id = await self.gates.submit((self.client_address(request), token))
        self.accepted.add(token, device_id)
        return device_id

    async def upload_gate(self, request: Request) -> tuple[str, tuple[str, str | None] | None]:
        """``authenticated`` for an upload: the device, and the (client address, token) whose gate
        the store's transaction must run (a token in ``accepted``), or None when it ran here."""
        self.reject_query(request)
        token = bearer_token(request.headers.get("authorization"))
        device_id = self.accepted.device(token)
        if device_id is None:
            return await self.authenticated(request), None
        return device_id, (self.client_address(request), token)

    def _enroll_gate(self, client: str) -> None:
        s = self.settings
        with relaxed_transaction(self.engine) as conn:
            relax_durability(conn)
            verdict = self.limiter.hit(conn, Limit(f"enroll-addr:{client}", s.rate_enroll_address),
                                       Limit("enroll:*", s.rate_enroll_global))
        if verdict.limited:
            raise ApiError("rate_limited", "too many enrollments; retry after the Retry-After delay", status=429,
                           headers={"Retry-After": str(verdict.retry_after)})

    # --- work ------------------------------------------------------------------------------------

    def _enroll(self, raw: bytes) -> store.Enrolled:
        body = strict_loads(raw).value
        self.validators.enroll.check(body)
        with self.engine.begin() as conn:
            try:
                return store.enroll(conn, body["secret"], body["device"], store.utcnow())
            except store.Unauthorized:
                pass
            except store.DeviceRevoked:
                raise ApiError("device_revoked", "an administrator revoked this device; it cannot enroll again "
                               "until it is re-admitted (netcheck admin readmit-device)", status=403) from None
        raise ApiError("invalid_secret", "the enrollment secret is wrong or revoked", status=401)

    def _gates_in_store(self, conn: Connection, batch: Sequence[Upload], now: dt.datetime) -> list[ApiError | None]:
        """The gates the store's transaction runs (``_Accepted``), durably like the rest of it: for
        each upload, its refusal (a 401 for a token revoked or replaced since, a 429), or None."""
        waiting = [i for i, (_, _, gate) in enumerate(batch) if gate is not None]
        out: list[ApiError | None] = [None] * len(batch)
        if not waiting:
            return out
        answers = self._gates(conn, [gate for _, _, gate in batch if gate is not None], now, relax=False)
        for i, answer in zip(waiting, answers, strict=True):
            device_id, _, gate = batch[i]
            assert gate is not None
            if answer != device_id:
                self.accepted.drop(gate[1])
                out[i] = answer if isinstance(answer, ApiError) else unauthorized()
        return out

    def _store(self, upload: Upload) -> str | ApiError:
        """One upload in its own durable transaction, its gate first when it is to run here. A
        report refused for its id (422) rolls that gate back: its counts are made again in a
        transaction of their own, and the token goes through the gate first next time."""
        device_id, item, gate = upload
        try:
            with self.engine.begin() as conn:
                now = store.utcnow()
                (refused,) = self._gates_in_store(conn, [upload], now)
                return refused if refused is not None else store.ingest(conn, device_id, item, now)
        except store.ReportConflict:
            if gate is not None:
                self.accepted.drop(gate[1])
                with relaxed_transaction(self.engine) as conn:
                    self._gates(conn, [gate], store.utcnow())
            return ApiError("report_id_conflict", "this report id was already stored with a different body",
                            field="report.report_id", status=422)

    def _store_batch(self, batch: list[Upload]) -> list[str | ApiError]:
        """Store uploads that arrived together in one durable transaction (one commit, one wait for
        the disk, instead of one each; each statement once for all, ``store.ingest_many``), in
        device order so that concurrent batches lock devices in the same order. The gates of
        uploads whose token ``accepted`` let through run first in it (``_gates_in_store``); a
        refused upload is not stored, and its counts commit with the rest. If anything in it
        fails (a report id reused with another body, a deadlock), nothing of it was stored and
        each upload is stored on its own, with its own answer."""
        now = store.utcnow()
        results: list[str | ApiError] = [""] * len(batch)
        with self._writing():
            if len(batch) > 1:
                try:
                    with self.engine.begin() as conn:
                        refused = self._gates_in_store(conn, batch, now)
                        order = sorted((i for i, no in enumerate(refused) if no is None), key=lambda i: batch[i][0])
                        answers = store.ingest_many(conn, [batch[i][:2] for i in order], now) if order else []
                    for i, no in enumerate(refused):
                        if no is not None:
                            results[i] = no
                    for i, answer in zip(order, answers, strict=True):
                        results[i] = answer
                    return results
                except (store.ReportConflict, sa.exc.DBAPIError) as exc:
                    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
                        raise
            return [self._store(upload) for upload in batch]

    async def prune(self) -> int:
        """Delete the reports past the retention period (``store.prune_all``); returns how many."""
        if not self.settings.retention_days:
            return 0
        cutoff = store.utcnow() - dt.timedelta(days=self.settings.retention_days)
        return await self._db(store.prune_all, self.engine, cutoff)

    async def prune_forever(self) -> None:
        """Each collector process prunes now and then, then compacts what arrived since
        (``store.compact_all``); a failure waits for the next turn."""
        while True:
            await anyio.sleep(self.settings.prune_interval_s * random.uniform(0.5, 1.5))
            try:
                deleted = await self.prune()
                compacted = await self._db(store.compact_all, self.engine, self.settings.full_history)
            except sa.exc.SQLAlchemyError as exc:
                log.warning("could not prune or compact reports: %s", str(exc).splitlines()[0][:300])
                continue
            if deleted:
                log.info("deleted %d report(s) older than %d days", deleted, self.settings.retention_days)
            if compacted:
                log.info("compacted %d report(s)", compacted)

    async def checkpoint_forever(self) -> None:
        """SQLite: each process checkpoints the write-ahead log every ``WAL_CHECKPOINT_S`` seconds,
        off the uploads' path (``db.no_commit_checkpoints``); a failure waits for the next turn."""
        while True:
            await anyio.sleep(WAL_CHECKPOINT_S)
            try:
                await self._db(checkpoint_wal, self.engine)
            except Exception as exc:  # noqa: BLE001 - the next turn tries again; the log must not grow unchecked
                log.warning("could not checkpoint the database's log: %s", str(exc).splitlines()[0][:300])

    def _read(self, fn: Callable[..., T], *args: Any) -> T:
        with self.engine.begin() as conn:
            return fn(conn, *args)

    def _ready(self) -> str | None:
        with self.engine.begin() as conn:
            return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one_or_none()

    # --- routes ----------------------------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "version": __version__})

    async def readyz(self, request: Request) -> Response:
        try:
            revision = await self._db(self._ready)
        except sa.exc.SQLAlchemyError as exc:
            log.warning("not ready: %s", str(exc).splitlines()[0][:300])
            revision = None
        if revision != self.head:
            return error_response(ApiError("not_ready", "the database is unreachable or not migrated "
                                           f"(schema {revision or 'none'}, want {self.head})", status=503))
        return JSONResponse({"status": "ready", "schema": revision, "version": __version__})

    async def openapi_json(self, request: Request) -> Response:
        return Response(self.openapi, media_type="application/json")

    async def enroll(self, request: Request) -> Response:
        self.reject_query(request)
        await self._db(self._enroll_gate, self.client_address(request))
        raw = await self.body(request)
        enrolled = await self._db(self._enroll, raw)
        return JSONResponse({"device_id": enrolled.device_id, "token": enrolled.token})

    async def reports(self, request: Request) -> Response:
        device_id, gate = await self.upload_gate(request)
        reduced = self.require_json(request, reduced=True)
        raw = await read_body(request, self.settings.max_body, self.settings.accept_gzip)
        prepare = partial(prepare_upload, self.validators, device_id, raw, reduced=reduced)
        if len(raw) <= INLINE_PREPARE_MAX:
            item = prepare()
        else:
            item = await anyio.to_thread.run_sync(prepare, limiter=self._prepare_slot)
        status = await self.stores.submit((device_id, item, gate))
        return JSONResponse({"status": status, "report_id": item.report_id, "device_id": device_id})

    async def policy(self, request: Request) -> Response:
        await self.authenticated(request)
        return JSONResponse(await self._db(self._read, health.policy_document))

    async def sweeps(self, request: Request) -> Response:
        device_id = await self.authenticated(request)
        pending = await self._db(self._read, store.pending_sweeps, device_id, store.utcnow())
        return JSONResponse({"sweeps": pending})


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        err = ApiError("not_found", "no such route", status=404)
    elif exc.status_code == 405:
        err = ApiError("method_not_allowed", "method not allowed on this route", status=405,
                       headers=dict(exc.headers or {}))
    else:
        err = ApiError("http_error", str(exc.detail), status=exc.status_code)
    return error_response(err)


async def _server_error(request: Request, exc: Exception) -> Response:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(ApiError("internal_error", "internal error; the collector logged it", status=500))


def tune_gc() -> None:
    """Keep the cyclic garbage collector from dominating ingest.

    A 170 KB report parses into some 20,000 Python objects. With the default threshold (700
    allocations) every upload set off dozens of collections, some of them over the whole heap
    (SQLAlchemy, Starlette, the compiled schemas): preparing a report took 5 ms of CPU instead of
    3 (measured in a worker under load). Objects alive at startup are frozen out of collections
    and collections run every 50,000 allocations; reference counting frees the reports
    themselves, so memory does not grow.
    """
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def create_app(settings: Settings, engine: Engine | None = None) -> Starlette:
    """The ASGI app. The schema must already be migrated (``netcheck serve`` does it first)."""
    if engine is None:
        engine = make_engine(settings.database_url, pool_size=settings.db_pool_size,
                             max_overflow=settings.db_max_overflow, timeout_s=settings.db_timeout_s)
    api = _Api(settings, engine)
    ui = dashboard.dashboard(settings, engine)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        tune_gc()
        await asyncio.to_thread(ui.warm)
        tasks = [asyncio.create_task(api.prune_forever()), asyncio.create_task(ui.ready())]
        if engine.dialect.name == "sqlite":
            tasks.append(asyncio.create_task(api.checkpoint_forever()))
        if settings.service_health:  # Microsoft service health: one process polls (a lease)
            tasks.append(asyncio.create_task(health.poll_forever(health.Poller(settings, engine))))
        yield
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        engine.dispose()

    routes = [
        Route("/healthz", api.healthz, methods=["GET"]),
        Route("/readyz", api.readyz, methods=["GET"]),
        Route("/api/v1/openapi.json", api.openapi_json, methods=["GET"]),
        Route("/api/v1/enroll", _json_endpoint(api.enroll), methods=["POST"]),
        Route("/api/v1/reports", _json_endpoint(api.reports), methods=["POST"]),
        Route("/api/v1/policy", _json_endpoint(api.policy), methods=["GET"]),
        Route("/api/v1/sweeps/pending", _json_endpoint(api.sweeps), methods=["GET"]),
        ui.routes(),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(BodyLimitMiddleware, max_body=settings.max_body, error_body=error_body)],
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
        lifespan=lifespan,
    )
    # No redirect is ever built from request headers: Starlette's trailing-slash redirect takes
    # its host from the Host header (Host: evil.example -> Location: http://evil.example/...).
    # /api/v1/policy/ is a 404 like any other unknown path.
    app.router.redirect_slashes = False
    return app


def create_app_from_env() -> Starlette:
    """Factory for uvicorn worker processes: settings come from ``NETCHECK_*`` variables, and a
    worker stops when its master is gone (``supervision.follow_master``)."""
    follow_master()
    return create_app(Settings.from_env())
