"""The unattended agent: scheduled checks, sweeps and uploads.

Two lanes, each a small state machine with ``due()`` (when it next wants to act)
and ``step(now)`` (act):

- :class:`CheckLane` runs a check on the schedule (interval + random jitter) and
  one per pending sweep, and spools each report;
- :class:`NetLane` talks to the collector: refreshes the policy, polls for sweeps
  and drains the spool, backing off (exponential, full jitter, Retry-After) when
  uploads fail.

:func:`run_forever` runs the lanes in two threads, so a slow or half-open
collector never delays a check. Between actions each thread sleeps on an event
with a timeout (no polling loop; idle costs no measurable CPU). Tests drive the
same lanes in simulated time, with an injected clock.

The check itself is injected (``run_check``); :func:`default_run_check` calls
``netcheck.check.perform_check`` with the options :func:`check_options` derives from the
collector's policy and the device's tags.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from netcheck.agent.schedule import Backoff, Schedule
from netcheck.agent.spool import Spool
from netcheck.agent.transport import CollectorClient, Disposition
from netcheck.agent.uploader import DrainResult, Uploader, drain_with_retries
from netcheck.deadline import Deadline
from netcheck.errors import ConfigError, NetcheckError
from netcheck.fleet_policy import SCHEMA
from netcheck.paths import atomic_write
from netcheck.policy import problem

if TYPE_CHECKING:
    from netcheck.check import CheckOptions
    from netcheck.site_profile import SiteProfile

log = logging.getLogger(__name__)

POLICY_FILE = "policy.json"
SWEEPS_FILE = "sweeps.json"
#: a sleeping thread looks at the clock at least this often (suspend/resume)
MAX_SLEEP_S = 60.0
NEVER = float("inf")


@dataclass(frozen=True)
class CheckRequest:
    thorough: bool = False
    sweep_id: str | None = None
    deadline_s: float | None = None
    #: the collector's policy document (tenant, instance, thresholds...); empty if never fetched
    policy: Mapping[str, Any] = field(default_factory=dict)
    #: the device's tags from enrollment (site, department); empty if the agent does not know them
    tags: Mapping[str, str] = field(default_factory=dict)


RunCheck = Callable[[CheckRequest], dict[str, Any]]


@dataclass(frozen=True)
class Sweep:
    id: str
    thorough: bool = False


@dataclass(frozen=True)
class LoopSettings:
    policy_refresh_s: float = 3600.0
    sweep_poll_s: float = 600.0
    #: how long one drain may run before the net lane looks at policy and sweeps again
    drain_budget_s: float = 120.0
    #: reports per drain step: a long backlog is sent in slices, each followed by a look at the clock
    drain_batch: int = 100
    #: when another process holds the upload lock, look again after this long
    busy_retry_s: float = 30.0


def boot_clock() -> float:
    """Seconds on a clock that keeps running while the laptop sleeps, where the OS has one."""
    try:
        return time.clock_gettime(time.CLOCK_BOOTTIME)  # type: ignore[attr-defined,unused-ignore]
    except (AttributeError, OSError):
        return time.monotonic()


class Shared:
    """What the two lanes share: the schedule, the policy and the sweep queue."""

    def __init__(self, schedule: Schedule, state_dir: Path, *, pinned_schedule: bool = False,
                 tags: Mapping[str, str] | None = None) -> None:
        self.lock = threading.Lock()
        self.schedule = schedule
        self.tags: Mapping[str, str] = dict(tags or {})
        self.pinned_schedule = pinned_schedule
        self.state_dir = state_dir
        self.policy: dict[str, Any] = {}
        self.sweeps: deque[Sweep] = deque()
        self._seen: dict[str, float] = {}
        self._load()

    def _load(self) -> None:
        for name, target in ((POLICY_FILE, "policy"), (SWEEPS_FILE, "_seen")):
            try:
                doc = json.loads((self.state_dir / name).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(doc, dict):
                setattr(self, target, doc)
        if self.policy:
            self._apply_schedule()

    def _apply_schedule(self) -> None:
        sched = self.policy.get("schedule")
        if isinstance(sched, dict) and not self.pinned_schedule:
            schema = SCHEMA["properties"]["schedule"]["properties"]  # a value that does not fit is ignored
            good = {k: v for k, v in sched.items() if k in schema and problem(v, schema[k]) is None}
            self.schedule = self.schedule.from_policy(good.get("interval_s"), good.get("jitter_s"))

    def set_policy(self, policy: dict[str, Any]) -> None:
        with self.lock:
            self.policy = policy
            self._apply_schedule()
        try:
            atomic_write(self.state_dir / POLICY_FILE, json.dumps(policy).encode("utf-8"), mode=0o600)
        except OSError as exc:
            log.warning("cannot keep the collector's policy on disk: %s", exc.strerror or exc)

    def offer_sweeps(self, sweeps: list[Sweep], wall_now: float, expires: dict[str, float]) -> int:
        """Queue the sweeps not seen before; returns how many were queued."""
        added = 0
        with self.lock:
            self._seen = {k: v for k, v in self._seen.items() if v > wall_now}
            for sweep in sweeps:
                if sweep.id in self._seen:
                    continue
                self._seen[sweep.id] = expires.get(sweep.id, wall_now + 7 * 86400)
                self.sweeps.append(sweep)
                added += 1
            seen = dict(self._seen)
        if added:
            try:
                atomic_write(self.state_dir / SWEEPS_FILE, json.dumps(seen).encode("utf-8"), mode=0o600)
            except OSError as exc:
                log.warning("cannot keep the sweep list on disk: %s", exc.strerror or exc)
        return added

    def next_sweep(self) -> Sweep | None:
        with self.lock:
            return self.sweeps.popleft() if self.sweeps else None

    def has_sweeps(self) -> bool:
        with self.lock:
            return bool(self.sweeps)

    def request(self, sweep: Sweep | None) -> CheckRequest:
        with self.lock:
            policy = dict(self.policy)
        deadline = policy.get("deadline_s")
        usable = problem(deadline, SCHEMA["properties"]["deadline_s"]) is None
        return CheckRequest(thorough=sweep.thorough if sweep else False, sweep_id=sweep.id if sweep else None,
                            deadline_s=float(deadline) if usable else None,  # type: ignore[arg-type]
                            policy=policy, tags=self.tags)


class Lane(Protocol):
    def due(self) -> float: ...
    def step(self, now: float) -> None: ...


class CheckLane:
    """Runs checks (scheduled and sweeps) and spools their reports."""

    def __init__(self, run_check: RunCheck, spool: Spool, shared: Shared, *, clock: Callable[[], float],
                 rng: random.Random, on_spooled: Callable[[], None] = lambda: None,
                 first_check_at: float | None = None) -> None:
        self.run_check = run_check
        self.spool = spool
        self.shared = shared
        self.clock = clock
        self.rng = rng
        self.on_spooled = on_spooled
        now = clock()
        self.next_check_at = first_check_at if first_check_at is not None \
            else now + shared.schedule.first_delay(rng)
        self.checks = 0
        self.failures = 0

    def due(self) -> float:
        return self.clock() if self.shared.has_sweeps() else self.next_check_at

    def step(self, now: float) -> None:
        sweep = self.shared.next_sweep()
        if sweep is None:
            if now < self.next_check_at:
                return
            self.next_check_at = now + self.shared.schedule.next_delay(self.rng)
        self.check_and_spool(sweep)

    def check_and_spool(self, sweep: Sweep | None) -> bool:
        request = self.shared.request(sweep)
        self.checks += 1
        try:
            report = self.run_check(request)
        except NetcheckError as exc:
            self.failures += 1
            log.error("check failed: %s", exc)
            return False
        except Exception:  # the agent must outlive a bug in one check
            self.failures += 1
            log.exception("check crashed; the agent carries on")
            return False
        if not isinstance(report, dict) or not isinstance(report.get("report_id"), str):
            self.failures += 1
            log.error("check returned no report")
            return False
        got = self.spool.append(report, sweep_id=sweep.id if sweep else None, thorough=bool(sweep and sweep.thorough))
        if got.spooled:
            self.on_spooled()
        return got.spooled


class NetLane:
    """Policy, sweeps and uploads: everything that waits on the collector."""

    def __init__(self, client: CollectorClient, uploader: Uploader, shared: Shared, *,
                 clock: Callable[[], float], wall: Callable[[], float] = time.time,
                 rng: random.Random, settings: LoopSettings | None = None,
                 backoff: Backoff | None = None, on_sweeps: Callable[[], None] = lambda: None) -> None:
        self.client = client
        self.uploader = uploader
        self.shared = shared
        self.clock = clock
        self.wall = wall
        self.rng = rng
        self.settings = settings or LoopSettings()
        self.backoff = backoff or Backoff()
        self.on_sweeps = on_sweeps
        self._lock = threading.Lock()
        now = clock()
        self.next_policy_at = now
        self.next_sweep_at = now
        self.next_upload_at = now
        self.attempts = 0
        self.last: DrainResult | None = None
        self.totals = DrainResult()

    def notify_spooled(self) -> None:
        """A report was spooled: upload now, unless the lane is backing off."""
        with self._lock:
            if self.backoff.attempt == 0:
                self.next_upload_at = min(self.next_upload_at, self.clock())

    def due(self) -> float:
        with self._lock:
            return min(self.next_policy_at, self.next_sweep_at, self.next_upload_at)

    def step(self, now: float) -> None:
        if now >= self.next_policy_at:
            self.refresh_policy(now)
        if now >= self.next_sweep_at:
            self.poll_sweeps(now)
        with self._lock:
            upload_due = now >= self.next_upload_at
        if upload_due:
            self.upload(now)

    def _spread(self, seconds: float) -> float:
        return seconds * self.rng.uniform(1.0, 1.1)

    def refresh_policy(self, now: float) -> None:
        ex = self.client.get_policy()
        if ex.ok and isinstance(ex.body, dict):
            self.shared.set_policy(ex.body)
            self.next_policy_at = now + self._spread(self.settings.policy_refresh_s)
        else:
            log.info("cannot fetch the collector's policy (%s); keeping the last one", ex.reason)
            self.next_policy_at = now + self._spread(min(self.settings.policy_refresh_s, 600.0))

    def poll_sweeps(self, now: float) -> None:
        self.next_sweep_at = now + self._spread(self.settings.sweep_poll_s)
        ex = self.client.pending_sweeps()
        if not ex.ok or not isinstance(ex.body, dict) or not isinstance(ex.body.get("sweeps"), list):
            log.info("cannot poll for sweeps (%s)", ex.reason)
            return
        sweeps, expires = parse_sweeps(ex.body["sweeps"])
        if self.shared.offer_sweeps(sweeps, self.wall(), expires):
            self.on_sweeps()

    def upload(self, now: float) -> DrainResult:
        self.attempts += 1
        got = self.uploader.drain(Deadline.after(self.settings.drain_budget_s), self.settings.drain_batch)
        self.last = got
        for name in ("sent", "stored", "duplicates", "quarantined"):
            setattr(self.totals, name, getattr(self.totals, name) + getattr(got, name))
        self.totals.acked_ids += got.acked_ids
        with self._lock:
            if got.busy:
                self.next_upload_at = now + self._spread(self.settings.busy_retry_s)
            elif got.failure is not None:
                delay = self.backoff.next_delay(self.rng, now, got.failure.retry_after_s)
                self.next_upload_at = now + delay
                level = logging.WARNING if got.failure.tls or \
                    got.failure.disposition is Disposition.UNAUTHORIZED else logging.INFO
                log.log(level, "upload failed (%s); %d report(s) kept, next try in %.0f s",
                        got.failure.reason, got.remaining, delay)
            else:
                if got.acked:
                    self.backoff.reset()
                self.next_upload_at = now if got.remaining else NEVER
        if got.acked:
            log.info("uploaded %d report(s)%s; %d waiting", got.acked,
                     f" ({got.duplicates} the collector already had)" if got.duplicates else "", got.remaining)
        return got


def parse_sweeps(items: list[Any]) -> tuple[list[Sweep], dict[str, float]]:
    from datetime import datetime

    sweeps: list[Sweep] = []
    expires: dict[str, float] = {}
    for item in items[:100]:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not item["id"]:
            continue
        sweeps.append(Sweep(item["id"][:64], bool(item.get("thorough", False))))
        try:
            expires[item["id"][:64]] = datetime.fromisoformat(str(item.get("expires_at"))).timestamp()
        except ValueError:
            pass
    return sweeps, expires


# -- the real check ------------------------------------------------------------

def default_run_check(request: CheckRequest) -> dict[str, Any]:
    """One real check with what the collector's policy and the device's tags say."""
    from netcheck.check import perform_check
    from netcheck.fleet_policy import usable_policy
    from netcheck.render.json import report_to_dict

    options = check_options(request)
    refresh_endpoints(usable_policy(request.policy)[0], options.instance)
    return report_to_dict(perform_check(options))


def refresh_endpoints(policy: Mapping[str, Any], instance: str) -> str | None:
    """With the policy's ``endpoints_url`` (Microsoft's web service or IT's mirror of it), bring
    the cached endpoint data up to date before a check, as ``netcheck endpoints update`` does:
    at most once an hour, backing off after HTTP 429, the cache replaced only by valid data.

    Without it the agent uses the data it has (cached or bundled) and asks no one. Returns what
    happened in one line (also logged); never raises.
    """
    url = policy.get("endpoints_url")
    if not isinstance(url, str) or not url:
        return None
    from netcheck.m365.webservice import Updater, make_client, resolve_base_url

    try:
        with make_client() as client:
            said = Updater(client, resolve_base_url(url)).update(instance).describe()
    except NetcheckError as exc:
        said = f"the endpoint data could not be updated from {url}: {exc}"
    log.info("%s", said.splitlines()[0] if said else said)
    return said


def check_options(request: CheckRequest) -> CheckOptions:
    """The check's options from the collector's policy (tenant, instance, user domain, thresholds,
    site profiles, Microsoft's service health), the request (deadline, thorough) and the device's ``site`` tag.

    A value the agent cannot use is logged and left out; it never fails the check.
    """
    from netcheck.check import CheckOptions
    from netcheck.fleet_policy import usable_policy
    from netcheck.policy import load_policy

    pol, problems = usable_policy(request.policy)
    local, _ = load_policy().with_thresholds(pol["thresholds"])
    if problems:
        more = f" (and {len(problems) - 30} more)" if len(problems) > 30 else ""
        log.warning("ignoring what cannot be used in the collector's policy (defaults kept): %s%s",
                    "; ".join(problems[:30]), more)
    site = request.tags.get("site")
    from netcheck.assess.service_health import from_policy

    return CheckOptions(instance=pol["instance"], tenant=pol["tenant"] or None, deadline_s=request.deadline_s,
                        thorough=request.thorough, policy=local, user=_user_domain(pol.get("user_domain")),
                        site_profiles=_site_profiles(pol.get("site_profiles")),
                        site_tag=site if isinstance(site, str) and site else None,
                        service_health=from_policy(pol.get("service_health")))


def _user_domain(value: object) -> str | None:
    """The policy's ``user_domain``, for sign-in realm discovery; None (logged) if it is not a domain."""
    if value is None or value == "":
        return None
    from netcheck.probes.realm import realm_domain

    if not isinstance(value, str) or realm_domain(value) is None or "@" in value:
        log.warning("ignoring the collector's user_domain %.80r: not a domain name", value)
        return None
    return value.strip()


def _site_profiles(items: object) -> tuple[SiteProfile, ...]:
    """The policy's ``site_profiles``; an entry that is not a valid profile is logged and skipped."""
    from netcheck.site_profile import check_site_names, site_profile_from_mapping

    if not isinstance(items, list):
        if items:
            log.warning("ignoring the collector's site_profiles: a list of profiles was expected")
        return ()
    profiles = []
    for index, item in enumerate(items):
        name = item.get("name") if isinstance(item, dict) else None
        where = f"the collector's site_profiles[{index}]" + (f" ({name[:64]!r})" if isinstance(name, str) else "")
        try:
            profiles.append(site_profile_from_mapping(item, where))
        except ConfigError as exc:
            log.warning("ignoring a site profile: %s", exc)
    try:
        return check_site_names(profiles, "the collector's site_profiles")
    except ConfigError as exc:  # several sites need names that tell them apart, and failovers that exist
        log.warning("ignoring the collector's site_profiles: %s", exc)
        return ()


# -- running the lanes ---------------------------------------------------------

@dataclass
class Agent:
    """Both lanes of one agent, wired together."""

    check_lane: CheckLane
    net_lane: NetLane
    spool: Spool
    shared: Shared


def build_agent(*, run_check: RunCheck, spool: Spool, client: CollectorClient, uploader: Uploader,
                schedule: Schedule, state_dir: Path | None = None, pinned_schedule: bool = False,
                tags: Mapping[str, str] | None = None,
                clock: Callable[[], float] = boot_clock, wall: Callable[[], float] = time.time,
                rng: random.Random | None = None, settings: LoopSettings | None = None,
                backoff: Backoff | None = None, first_check_at: float | None = None) -> Agent:
    rng = rng or random.Random()
    shared = Shared(schedule, state_dir or spool.root, pinned_schedule=pinned_schedule, tags=tags)
    net = NetLane(client, uploader, shared, clock=clock, wall=wall, rng=rng, settings=settings,
                  backoff=backoff)
    check = CheckLane(run_check, spool, shared, clock=clock, rng=rng, on_spooled=net.notify_spooled,
                      first_check_at=first_check_at)
    return Agent(check, net, spool, shared)


def _run_lane(lane: Lane, clock: Callable[[], float], stop: threading.Event, wake: threading.Event,
              name: str) -> None:
    while not stop.is_set():
        delay = lane.due() - clock()
        if delay > 0:
            wake.wait(min(delay, MAX_SLEEP_S))
            wake.clear()
            continue
        try:
            lane.step(clock())
        except Exception:  # pragma: no cover - a bug must not kill the agent; log and slow down
            log.exception("%s lane failed; carrying on", name)
            stop.wait(MAX_SLEEP_S)


def run_forever(agent: Agent, stop: threading.Event, clock: Callable[[], float] = boot_clock,
                join_timeout_s: float = 5.0) -> None:
    """Run both lanes until ``stop`` is set (SIGTERM, Ctrl-C). Checks never wait for uploads."""
    check_wake, net_wake = threading.Event(), threading.Event()

    def spooled() -> None:
        agent.net_lane.notify_spooled()
        net_wake.set()

    agent.check_lane.on_spooled = spooled
    agent.net_lane.on_sweeps = check_wake.set

    def wake_all() -> None:
        stop.wait()
        check_wake.set()
        net_wake.set()

    threading.Thread(target=wake_all, name="netcheck-stop", daemon=True).start()
    net = threading.Thread(target=_run_lane, args=(agent.net_lane, clock, stop, net_wake, "upload"),
                           name="netcheck-upload", daemon=True)
    net.start()
    _run_lane(agent.check_lane, clock, stop, check_wake, "check")
    net.join(join_timeout_s)


@dataclass(frozen=True)
class OnceResult:
    checks: int
    spooled: int
    upload: DrainResult


def run_once(agent: Agent, *, upload_deadline_s: float = 60.0,
             sleep: Callable[[float], None] = time.sleep) -> OnceResult:
    """``netcheck agent --once``: policy, sweeps, one check (plus one per sweep), upload, done."""
    now = agent.net_lane.clock()
    agent.net_lane.refresh_policy(now)
    agent.net_lane.poll_sweeps(now)
    spooled = int(agent.check_lane.check_and_spool(None))
    checks = 1
    while (sweep := agent.shared.next_sweep()) is not None:
        spooled += int(agent.check_lane.check_and_spool(sweep))
        checks += 1
    got = drain_with_retries(agent.net_lane.uploader, Deadline.after(upload_deadline_s), sleep=sleep)
    return OnceResult(checks, spooled, got)
