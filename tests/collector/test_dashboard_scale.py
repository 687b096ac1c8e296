"""The dashboard's fleet-scale paths on a real collector (SQLite and PostgreSQL): exports streamed
in keyset batches, the 30-day chart counting devices (finished days kept in ``fleet_days``),
workload names, sweeps by site, and the site profiles on the admin page."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from netcheck.collector import export, store
from netcheck.collector.db import (
    EXPORT_TEXT_COLUMNS,
    READS_ONLY,
    device_states,
    devices,
    fleet_days,
    make_engine,
    reports,
    sweep_responses,
)
from netcheck.collector.web import copy_export, queries, sites, views
from netcheck.collector.web.queries import Filters
from tests.collector.conftest import Device, Fleet, sample_report, sql, upload
from tests.collector.dashboard import PAYLOAD, add_user, hostile_report, sign_in


@pytest.fixture
def clients() -> Iterator[list[httpx.Client]]:
    opened: list[httpx.Client] = []
    yield opened
    for c in opened:
        c.close()


def signed_in(fleet: Fleet, role: str, opened: list[httpx.Client]) -> tuple[httpx.Client, str]:
    client, token = sign_in(fleet.collector.url, *add_user(fleet.database_url, role))
    opened.append(client)
    return client, token


def test_an_export_walks_the_list_in_keyset_batches_each_in_its_own_transaction(fleet: Fleet) -> None:
    tag = f"x{fleet.secret_id[-6:]}"
    made = sorted(fleet.enroll(tags={"dept": tag}).device_id for _ in range(5))
    engine = make_engine(fleet.database_url, pool_size=1, max_overflow=0)
    transactions = []

    def connect() -> AbstractContextManager[Connection]:
        transactions.append(1)
        return engine.begin()

    try:
        listing = queries.devices_listing(Filters(tag=("dept", tag)), dt.datetime.now(dt.UTC))
        batches = list(queries.export_batches(connect, listing, batch=2))
    finally:
        engine.dispose()
    assert [[r["device_id"] for r in b] for b in batches] == [made[0:2], made[2:4], made[4:5]]
    assert len(transactions) == 3
    assert all(r["tags"] == {"dept": tag} for b in batches for r in b)


def test_a_batch_bounds_the_subquery_it_tests_each_device_with_by_its_last_key_and_range() -> None:
    """A list of devices that tests a subquery for each device (a sweep's missing devices: its answers)
    starts that subquery's index at the batch's last key too, and stops it at its range's end
    (``queries.key_bounds``); at first, anywhere. The devices behind a Sites number test none: each
    device's own ``facts_digest``."""
    sw = SimpleNamespace(id="s", tag_key=None, tag_value=None)
    engine = sa.create_engine("sqlite://")
    try:
        with engine.connect() as conn:
            missing = queries.sweep_devices_listing(sw, False, dt.datetime.now(dt.UTC))
            site_devices = sites.devices_listing(conn, ["d" * 64])
    finally:
        engine.dispose()
    def bounds(listing: queries.Listing) -> tuple[str, str | None]:
        params = listing.query.compile().params
        return params["after_key"], params["before_key"]

    assert bounds(missing) == ("", None)
    assert bounds(missing.after("k-1")) == ("k-1", None)
    assert bounds(missing.within("4", "6")) == ("4", "6")
    assert bounds(missing.within("4", "6").after("4a")) == ("4a", "6")
    assert bounds(missing.within(None, "2")) == ("", "2") and bounds(missing.within("e", None)) == ("e", None)
    assert "device_id >= :after_key AND (:before_key IS NULL OR sweep_responses.device_id < :before_key)" in str(
        missing.query)
    assert "device_states" not in str(site_devices.query) and "devices.facts_digest IN" in str(site_devices.query)


def test_exports_are_streamed_with_a_header_and_every_row(fleet: Fleet, clients: list[httpx.Client]) -> None:
    tag = f"s{fleet.secret_id[-6:]}"
    made = {fleet.enroll(tags={"dept": tag}).device_id for _ in range(3)}
    client, _ = signed_in(fleet, "read-only", clients)
    with client.stream("GET", "/ui/devices", params={"tag": f"dept={tag}", "format": "csv"}) as got:
        assert got.status_code == 200
        assert "content-length" not in got.headers  # streamed (chunked), not built in memory first
        assert got.headers["content-disposition"] == 'attachment; filename="netcheck-devices.csv"'
        text = got.read().decode()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert {r["device_id"] for r in rows} == made
    assert text.splitlines()[0] == ",".join(queries.DEVICE_COLUMNS)
    as_json = client.get("/ui/devices", params={"tag": f"dept={tag}", "format": "json"}).json()
    assert {d["device_id"] for d in as_json["devices"]} == made
    empty = client.get("/ui/devices", params={"tag": "dept=nobody-at-all", "format": "json"}).json()
    assert empty == {"devices": []}
    assert client.get("/ui/devices/no-such-device", params={"format": "csv"}).status_code == 404


def test_the_chart_counts_each_device_once_a_day_in_the_background_and_keeps_finished_days(fleet: Fleet) -> None:
    a, b, c = fleet.enroll(), fleet.enroll(), fleet.enroll()
    for device, seq in ((a, 1), (a, 2), (b, 1), (c, 1), (c, 2)):
        assert fleet.post(device, upload(sample_report(), seq)).status_code == 200
    pks = [r[0] for r in sql(fleet.database_url, "SELECT id FROM reports WHERE device_id IN (:a, :b, :c) ORDER BY id",
                             a=a.device_id, b=b.device_id, c=c.device_id)]
    day = dt.datetime(2001, 1, 1, tzinfo=dt.UTC)
    # device a: NOT READY in the morning, READY later the same day; device b: AT RISK the next day;
    # device c: READY just before the first midnight, NOT READY just after it
    engine = make_engine(fleet.database_url, pool_size=2, max_overflow=0)
    days = queries.FleetDays(engine.begin)
    now = day + dt.timedelta(days=2, hours=12)
    try:
        with engine.begin() as conn:  # stamped as the collector stores its times
            for pk, at, verdict in zip(
                    pks, (day.replace(hour=9), day.replace(hour=10), day + dt.timedelta(days=1, hours=8),
                          day + dt.timedelta(days=1, microseconds=-1), day + dt.timedelta(days=1)),
                    ("NOT_READY", "READY", "AT_RISK", "READY", "NOT_READY"), strict=True):
                conn.execute(sa.update(reports).where(reports.c.id == pk).values(received_at=at, verdict=verdict))
        with engine.begin() as conn:  # the view reads what is kept, and starts counting the rest
            first = days.trend(conn, now, days=3)
        assert [(r["day"], r["counting"], r["READY"], r["AT_RISK"], r["NOT_READY"]) for r in first[:2]] == [
            ("2001-01-01", True, 0, 0, 0), ("2001-01-02", True, 0, 0, 0)]
        days.join(60)
        with engine.begin() as conn:
            trend = days.trend(conn, now, days=3)
            slow = queries.devices_by_day(conn, day, day + dt.timedelta(days=2))  # the full count, both days at once
        assert [(r["day"], r["counting"], r["READY"], r["AT_RISK"], r["NOT_READY"]) for r in trend[:2]] == [
            ("2001-01-01", False, 2, 0, 0), ("2001-01-02", False, 0, 1, 1)]  # a once, by its last report of the day
        assert [{v: n for v in queries.VERDICTS if (n := r[v])} for r in trend[:2]] == [
            slow["2001-01-01"], slow["2001-01-02"]]
        sql(fleet.database_url, "DELETE FROM reports WHERE device_id IN (:a, :b, :c)",
            a=a.device_id, b=b.device_id, c=c.device_id)
        with engine.begin() as conn:  # a finished day is counted once, and kept (retention does not change it)
            assert days.trend(conn, now, days=3)[:2] == trend[:2]
            assert queries.uncounted_days(conn, now, days=3) == []
    finally:
        engine.dispose()
    assert fleet.count("SELECT count(*) FROM fleet_days WHERE day IN ('2001-01-01', '2001-01-02')") == 2


def test_yesterday_is_counted_once_uploads_stamped_before_midnight_have_committed(fleet: Fleet) -> None:
    engine = make_engine(fleet.database_url, pool_size=1, max_overflow=0)
    midnight = dt.datetime(2001, 2, 2, tzinfo=dt.UTC)
    try:
        with engine.begin() as conn:
            assert queries.uncounted_days(conn, midnight + queries.DAY_SETTLED / 2, days=2) == []
            assert queries.fleet_trend(conn, midnight + queries.DAY_SETTLED / 2, days=2)[0]["counting"]
            assert queries.uncounted_days(conn, midnight + queries.DAY_SETTLED, days=2) == ["2001-02-01"]
            assert queries.count_day(conn, "2001-02-01", midnight)
            assert not queries.count_day(conn, "2001-02-01", midnight)  # kept: not counted twice
    finally:
        engine.dispose()


def test_a_transaction_that_only_reads_never_holds_the_write_lock(fleet: Fleet) -> None:
    """Where the background count of a day runs on SQLite: uploads and page views (each a ``BEGIN
    IMMEDIATE``) go on meanwhile."""
    engine = make_engine(fleet.database_url, pool_size=2, max_overflow=0, timeout_s=0.5)
    try:
        with engine.connect() as reader:
            reader.execution_options(**{READS_ONLY: True})
            with reader.begin():
                assert reader.execute(sa.select(sa.func.count()).select_from(reports)).scalar_one() >= 0
                with engine.begin() as writer:  # would wait 0.5 s and fail, were the reader holding the lock
                    writer.execute(sa.delete(fleet_days).where(fleet_days.c.day == "none"))
    finally:
        engine.dispose()


def _days_kept(fleet: Fleet, after: str, at_least: int) -> None:
    deadline = time.monotonic() + 120
    while fleet.count("SELECT count(*) FROM fleet_days WHERE day > :d", d=after) < at_least:
        assert time.monotonic() < deadline, "the finished days were not counted in the background"
        time.sleep(0.2)


def test_the_overview_never_waits_for_the_finished_days(fleet: Fleet, clients: list[httpx.Client]) -> None:
    assert fleet.post(fleet.enroll(), upload(sample_report())).status_code == 200
    cutoff = (dt.datetime.now(dt.UTC) - dt.timedelta(days=40)).date().isoformat()
    client, _ = signed_in(fleet, "read-only", clients)  # which views the overview: its count may be running
    _days_kept(fleet, cutoff, 28)
    sql(fleet.database_url, "DELETE FROM fleet_days WHERE day > :d", d=cutoff)
    page = client.get("/ui/", params={"stale_days": 41})  # a count the server has not kept for another view
    assert page.status_code == 200
    assert "in the background: counting…" in page.text
    _days_kept(fleet, cutoff, 28)  # 29 finished days (28 in the minute after midnight)


def test_workloads_are_shown_by_name(fleet: Fleet, clients: list[httpx.Client]) -> None:
    assert fleet.post(fleet.enroll(), upload(sample_report())).status_code == 200
    client, _ = signed_in(fleet, "read-only", clients)
    overview = client.get("/ui/").text
    assert '<td title="exchange">Exchange Online</td>' in overview


def test_counts_read_at_fleet_scale_and_line_up_under_their_headings(fleet: Fleet, clients: list[httpx.Client]) -> None:
    """Counts are written with thousands separated (102,400 devices, not 102400), and the headings of
    the columns that hold them are right-aligned as the numbers are."""
    count = views._environment().from_string("{{ n|count }}")
    assert [count.render(n=n) for n in (0, 999, 1000, 102400, 1234567)] == ["0", "999", "1,000", "102,400", "1,234,567"]
    assert count.render(n="-") == "-" and count.render(n=True) == "True"
    assert fleet.post(fleet.enroll(), upload(sample_report())).status_code == 200
    client, _ = signed_in(fleet, "read-only", clients)
    overview = client.get("/ui/").text
    assert '<th class="num">ok</th>' in overview and '<th class="num">Devices</th>' in overview
    assert "th.num, td.num { text-align: right;" in client.get("/ui/static/dashboard.css").text


def test_a_sweep_targets_a_site_chosen_from_the_fleets_sites(fleet: Fleet, clients: list[httpx.Client]) -> None:
    site = f"lyon{fleet.secret_id[-6:]}"
    fleet.enroll(tags={"site": site})
    admin, token = signed_in(fleet, "admin", clients)
    assert f"<option>{site}</option>" in admin.get("/ui/sweeps").text
    made = admin.post("/ui/sweeps", data={"csrf": token, "expires": "2h", "site": site})
    assert made.status_code == 303
    sweep_id = made.headers["location"].rsplit("/", 1)[1]
    assert [tuple(r) for r in sql(fleet.database_url, "SELECT tag_key, tag_value FROM sweeps WHERE id = :i",
                                  i=sweep_id)] == [("site", site)]
    assert "site=" + site in admin.get(f"/ui/sweeps/{sweep_id}").text
    both = admin.post("/ui/sweeps", data={"csrf": token, "expires": "2h", "site": site, "tag": "dept=x"})
    assert both.status_code == 400 and "a site or a tag, not both" in both.text


def test_site_profiles_are_listed_added_edited_and_removed_as_the_policy_validates_them(
        fleet: Fleet, clients: list[httpx.Client]) -> None:
    admin, token = signed_in(fleet, "admin", clients)
    reader, reader_token = signed_in(fleet, "read-only", clients)

    def post(client: httpx.Client, csrf: str, **data: str) -> httpx.Response:
        return client.post("/ui/admin/site-profiles", data={"csrf": csrf, **data})

    def stored() -> list[dict[str, object]]:
        rows = sql(fleet.database_url, "SELECT value_json FROM policy WHERE key = 'site_profiles'")
        return json.loads(rows[0][0]) if rows else []

    paris = {"name": "Paris", "networks": ["10.20.0.0/16"], "vpn_gateways": ["vpn.paris.example"]}
    assert post(reader, reader_token, profile=json.dumps(paris)).status_code == 403
    assert post(admin, token, profile=json.dumps(paris)).status_code == 303
    assert post(admin, token, profile=json.dumps({"name": "Dublin", "vpn_failover": ["Paris"]})).status_code == 303
    assert [p["name"] for p in stored()] == ["Paris", "Dublin"]
    page = admin.get("/ui/admin").text
    assert "vpn.paris.example" in page and 'value="Dublin"' in page
    # the same checks as `admin policy set site_profiles`: a prefix, vpn_exclude without split, a duplicate name
    for bad, says in (({"name": "Lyon", "networks": ["10.0.0.0/33"]}, "is not an IP prefix"),
                      ({"name": "Lyon", "vpn_exclude": ["Optimize"]}, "vpn_exclude needs vpn_mode"),
                      ({"name": "paris"}, "two site profiles are named")):
        refused = post(admin, token, profile=json.dumps(bad))
        assert refused.status_code == 400 and says in refused.text, refused.text[-500:]
    assert post(admin, token, profile="{not json").status_code == 400
    # edit: renaming Paris breaks Dublin's failover, so it is refused; a change that keeps it is stored
    renamed = post(admin, token, original="Paris", profile=json.dumps({**paris, "name": "Paris HQ"}))
    assert renamed.status_code == 400 and "vpn_failover" in renamed.text
    assert post(admin, token, original="Paris", profile=json.dumps({**paris, "dns_servers": ["10.20.0.53"]})
                ).status_code == 303
    assert stored()[0]["dns_servers"] == ["10.20.0.53"]
    assert post(admin, token, original="Dublin", remove="1").status_code == 303
    assert [p["name"] for p in stored()] == ["Paris"]
    assert post(admin, token, original="Paris", remove="1").status_code == 303
    assert stored() == []


def test_a_sweeps_device_list_pages_by_keyset(fleet: Fleet, clients: list[httpx.Client]) -> None:
    tag = f"k{fleet.secret_id[-6:]}"
    made = sorted(fleet.enroll(tags={"dept": tag}).device_id for _ in range(3))
    admin, token = signed_in(fleet, "admin", clients)
    sweep_id = admin.post("/ui/sweeps", data={"csrf": token, "expires": "2h", "tag": f"dept={tag}"}
                          ).headers["location"].rsplit("/", 1)[1]
    engine = make_engine(fleet.database_url, pool_size=1, max_overflow=0)
    now = dt.datetime.now(dt.UTC)
    try:
        with engine.begin() as conn:
            sw = queries.sweep(conn, sweep_id)
            first = queries.sweep_devices_page(conn, sw, False, now, None, size=2)
            rest = queries.sweep_devices_page(conn, sw, False, now, first.rows[-1]["device_id"], size=2)
    finally:
        engine.dispose()
    assert [r["device_id"] for r in first.rows] == made[:2] and first.more
    assert [r["device_id"] for r in rest.rows] == made[2:] and not rest.more
    # the page's own links: a deep page is a URL too
    page = admin.get(f"/ui/sweeps/{sweep_id}", params={"after": made[0]}).text
    assert made[0] not in page and made[1] in page and made[2] in page


#: cell values a spreadsheet or a browser could run, and the ones the two writers could quote or
#: escape differently: formulas after Unicode blanks, full-width and small forms, controls, quotes,
#: commas, line breaks, COPY's end marker, empty, non-ASCII
HOSTILE = (PAYLOAD, "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)", "\t=1", "\r=1", "\nx", " \u00a0=1",
           "\u200b\u3000\uff1d1", "\uff0b1", "\ufe631", "a,b", 'say "hi"', "line1\nline2", "x\r\ny", "\\.",
           "", " ", "é日本語🙂", "<b>x</b>", "\u2028=x", "'quoted", "\u0085-1", "Zed", "9=1", "\U000e0020@x")


def _same_exports(engine: sa.Engine, listings: dict[str, queries.Listing]) -> None:
    """Each list's exports PostgreSQL writes equal the Python path's, byte for byte, in batches of 2."""
    for name, listing in listings.items():
        by_python = queries.export_batches(engine.begin, listing, batch=2)
        csv_text = "".join(views._csv_lines(listing.columns, by_python)).encode()
        assert b"".join(copy_export.csv_chunks(engine.begin, listing, batch=2)) == csv_text, name
        by_python = queries.export_batches(engine.begin, listing, batch=2)
        json_text = "".join(views._json_lines(name, by_python)).encode()
        assert b"".join(copy_export.json_chunks(engine.begin, listing, name, batch=2)) == json_text, name
        json.loads(json_text)


def test_an_export_cut_into_ranges_writes_each_row_once_in_key_order(fleet: Fleet, backend: str) -> None:
    """A list cut where ``splits`` say (written ``copy_export.LANES`` ranges at once) exports what the
    uncut list does, byte for byte: cut at every device's own id (each starts a range), at hex digits,
    past every id, at ids no device has; an empty range writes nothing."""
    if backend != "postgresql":
        pytest.skip("SQLite exports take the Python path only")
    tag = f"r{fleet.secret_id[-6:]}"
    made = sorted(fleet.enroll(tags={"dept": tag}).device_id for _ in range(9))
    engine = make_engine(fleet.database_url, pool_size=4, max_overflow=0)
    try:
        whole = replace(queries.devices_listing(Filters(tag=("dept", tag)), dt.datetime.now(dt.UTC)), splits=())
        expected = {"csv": b"".join(copy_export.csv_chunks(engine.begin, whole, batch=2)),
                    "json": b"".join(copy_export.json_chunks(engine.begin, whole, "devices", batch=2))}
        assert [r["device_id"] for r in csv.DictReader(io.StringIO(expected["csv"].decode()))] == made
        for splits in (made, made[1::3], queries.UUID_SPLITS, ("~",), (made[4][:8], made[4] + "0")):
            cut = replace(whole, splits=tuple(splits))
            assert b"".join(copy_export.csv_chunks(engine.begin, cut, batch=2)) == expected["csv"], splits
            assert b"".join(copy_export.json_chunks(engine.begin, cut, "devices", batch=2)) == expected["json"]
    finally:
        engine.dispose()


def test_an_abandoned_or_failed_export_stops_its_lanes(fleet: Fleet, backend: str) -> None:
    """A client gone after the first texts stops every lane after its batch: soon after the export
    is closed, no thread of it is left and every connection is back in the pool. A batch that fails
    raises where its text would have been read, and leaves nothing running either."""

    def lanes_ended() -> None:
        deadline = time.monotonic() + 10
        while any(t.name.startswith("netcheck-export") for t in threading.enumerate()):
            assert time.monotonic() < deadline, "an export's lane runs on"
            time.sleep(0.02)
        assert engine.pool.checkedout() == 0

    if backend != "postgresql":
        pytest.skip("SQLite exports take the Python path only")
    for _ in range(12):
        fleet.enroll()
    engine = make_engine(fleet.database_url, pool_size=4, max_overflow=0)
    try:
        listing = queries.devices_listing(Filters(), dt.datetime.now(dt.UTC))
        chunks = copy_export.csv_chunks(engine.begin, listing, batch=1)
        next(chunks), next(chunks)
        chunks.close()
        lanes_ended()
        calls = []

        def failing() -> AbstractContextManager[Connection]:
            calls.append(1)
            if len(calls) == 5:
                raise sa.exc.OperationalError("SELECT", {}, Exception("the database went away"))
            return engine.begin()

        with pytest.raises(sa.exc.OperationalError, match="went away"):
            b"".join(copy_export.json_chunks(failing, listing, "devices", batch=1))
        lanes_ended()
    finally:
        engine.dispose()


def _reenroll(conn: Connection, fleet: Fleet, device: Device, text: str, tags: dict[str, str]) -> None:
    """The device enrolls again (same hardware) with ``text`` as its name, system and agent version."""
    store.enroll(conn, fleet.secret, {"hardware_id": device.hardware_id, "name": text, "os": text[:16],
                                      "agent_version": text[:64], "tags": tags}, dt.datetime.now(dt.UTC))


def test_postgresql_writes_the_exports_byte_for_byte_as_python_does(fleet: Fleet, backend: str) -> None:
    """The exports PostgreSQL writes (``copy_export``, reading the devices' kept texts) equal the
    Python path's, byte for byte, on hostile names, systems, agent versions, tags, notes and
    reports, for every list, in keyset batches of 2."""
    if backend != "postgresql":
        pytest.skip("SQLite exports take the Python path only")
    made = [fleet.enroll(tags={"site": "paris"}) for _ in HOSTILE]
    now = dt.datetime.now(dt.UTC)
    engine = make_engine(fleet.database_url, pool_size=1, max_overflow=0)
    try:
        with engine.begin() as conn:
            sw = store.create_sweep(conn, now, dt.timedelta(hours=1), tag=("site", "paris"), note=HOSTILE[1])
            # created on a whole second: a time without a fraction
            tagged = store.create_sweep(conn, now.replace(microsecond=0), dt.timedelta(hours=1), thorough=True,
                                        tag=("k", PAYLOAD[:100]), note=PAYLOAD)
            for device, text in zip(made, HOSTILE, strict=True):
                _reenroll(conn, fleet, device, text, {"site": "paris", "note": text, "=x": text[:20],
                                                      "\u00e9": "\uff1d"})
        for device in made[:3]:
            assert fleet.post(device, upload(hostile_report(), sweep_id=sw["id"])).status_code == 200
        with engine.begin() as conn:
            sweep_row = queries.sweep(conn, sw["id"])
            # the devices behind a Sites number: those whose latest facts have these digests
            assert conn.execute(sa.update(device_states).values(facts_digest="f" * 64)
                                .where(device_states.c.device_id.in_([d.device_id for d in made]))).rowcount == 3
            assert conn.execute(sa.update(devices).values(facts_digest="f" * 64).where(devices.c.id.in_(
                sa.select(device_states.c.device_id).where(device_states.c.facts_digest == "f" * 64)))).rowcount == 3
            site_devices = sites.devices_listing(conn, ["f" * 64, "e" * 64])
            assert conn.execute(sa.select(sa.func.count()).select_from(sweep_responses)
                                .where(sweep_responses.c.sweep_id == sw["id"])).scalar_one() == 3
        listings = {"devices": queries.devices_listing(Filters(), now),
                    "named": queries.devices_listing(Filters(name="=", tag=("site", "paris")), now),
                    "history": queries.history_listing(made[0].device_id),
                    "sweeps": queries.sweeps_listing(),
                    "answered": queries.sweep_devices_listing(sweep_row, True, now),
                    "missing": queries.sweep_devices_listing(sweep_row, False, now),
                    "site-devices": site_devices}
        _same_exports(engine, listings)
        # the data was hostile enough: neutralised cells, quoted cells, a tagged sweep
        exported = b"".join(copy_export.csv_chunks(engine.begin, listings["devices"])).decode()
        names = {r["device_id"]: r["name"] for r in csv.DictReader(io.StringIO(exported, newline=""))}
        assert [names[d.device_id] for d in made] == [export.neutralise(t) for t in HOSTILE]
        assert names[made[0].device_id] == "'" + PAYLOAD and names[made[5].device_id] == "'\r=1"
        assert names[made[8].device_id] == "'\u200b\u3000\uff1d1" and names[made[13].device_id] == "line1\nline2"
        swept = b"".join(copy_export.csv_chunks(engine.begin, listings["sweeps"])).decode()
        assert f'{tagged["id"]},{tagged["created_at"]},' in swept and "." not in tagged["created_at"]
    finally:
        engine.dispose()


def _texts_kept(conn: Connection) -> None:
    """Every device's kept export texts are what the Python writers write from its columns, its kept
    lines (``export_csv``, ``export_json``) the Python path's rows of the devices' list, and every
    sweep answer's verdict its report's."""
    rows = conn.execute(sa.select(devices)).all()
    tags = store.tags_of(conn, [r.id for r in rows])
    for r in rows:
        kept = {c: getattr(r, c) for c in EXPORT_TEXT_COLUMNS}
        assert kept == store.export_texts({**r._mapping, "tags": tags.get(r.id, {})}), r.id
        assert r.last_seen_iso == store.iso(r.last_seen_at) and r.revoked_iso == store.iso(r.revoked_at)
    lines = {r.id: (r.export_csv, r.export_json) for r in rows}
    listed = []
    for revoked in (False, True):
        listing = queries.devices_listing(Filters(revoked=revoked), dt.datetime.now(dt.UTC))
        listed += [dict(r._mapping) for r in conn.execute(listing.query)]
        listing.finish(conn, listed)
    assert len(listed) == len(rows)
    for row in listed:
        by_python = (export.table_csv(listing.columns, [views._iso_values(row)], header=False),
                     json.dumps(row, default=views._json_default, ensure_ascii=False))
        assert lines[row["device_id"]] == by_python, row["device_id"]
    assert conn.execute(sa.select(sa.func.count()).select_from(sweep_responses.join(
        reports, reports.c.id == sweep_responses.c.report_pk)).where(
        sweep_responses.c.verdict.is_distinct_from(reports.c.verdict))).scalar_one() == 0
    states = dict(conn.execute(sa.select(device_states.c.device_id, device_states.c.facts_digest)).all())
    assert {r.id: r.facts_digest for r in rows} == {r.id: states.get(r.id) for r in rows}
    for r in rows:  # the pieces of its rows in a sweep's lists and the Sites devices (``db.row_pieces``)
        assert _pieces({"device_id": r.id, "name": r.name}, head=True) == (r.row_head_csv, r.row_head_json), r.id
        assert _pieces({"last_seen_at": r.last_seen_at, "last_verdict": r.last_verdict}) == (
            r.row_seen_csv, r.row_seen_json), r.id
    for a in conn.execute(sa.select(sweep_responses)):  # an answer's own cells, ended
        tail_csv, tail_json = _pieces({"verdict": a.verdict, "received_at": a.received_at, "state": "answered"})
        assert (a.tail_csv, a.tail_json) == (tail_csv.removesuffix(",answered") + "\r\n", tail_json + "}")


def _pieces(row: dict[str, Any], *, head: bool = False) -> tuple[str, str]:
    """The row's cells as the Python path writes them inside a line (after others, or, ``head``,
    first and followed by more): its CSV cells and its JSON members."""
    line = export.table_csv(list(row), [views._iso_values(row)], header=False).removesuffix("\r\n")
    members = json.dumps(row, default=views._json_default, ensure_ascii=False)
    return (line + ",", members[:-1]) if head else ("," + line, ", " + members[1:-1])


def test_the_kept_export_texts_follow_every_write_of_their_columns(fleet: Fleet, backend: str) -> None:
    """What ``devices`` keeps for the exports (``store.export_texts``, ``last_seen_iso``,
    ``revoked_iso``, the whole lines ``export_csv`` and ``export_json``, the pieces ``row_*`` of its
    rows in a sweep's lists and the Sites devices, its latest state's ``facts_digest``) and a sweep
    answer's verdict and cells (``tail_*``) are refreshed by every write of the columns they hold:
    enrollment, enrolling again with another name, system, version and tags, ingest (a new report,
    a late older one, a sweep's answer), revoking and readmitting; on PostgreSQL the exports (every
    device's too) stay byte for byte the Python path's after each."""
    tag = f"k{fleet.secret_id[-6:]}"
    engine = make_engine(fleet.database_url, pool_size=1, max_overflow=0)
    now = dt.datetime.now(dt.UTC)

    def check() -> None:
        with engine.begin() as conn:
            _texts_kept(conn)
            sw = queries.sweep(conn, sweep_id)
            digests = [d for d in conn.execute(sa.select(device_states.c.facts_digest).distinct()).scalars() if d]
            site_devices = sites.devices_listing(conn, digests)
        if backend == "postgresql":
            _same_exports(engine, {
                "devices": queries.devices_listing(Filters(tag=("dept", tag)), now),
                "all-devices": queries.devices_listing(Filters(), now),
                "revoked": queries.devices_listing(Filters(revoked=True), now),
                "answered": queries.sweep_devices_listing(sw, True, now),
                "missing": queries.sweep_devices_listing(sw, False, now), "site-devices": site_devices})

    try:
        with engine.begin() as conn:
            sweep_id = store.create_sweep(conn, now, dt.timedelta(hours=1), tag=("dept", tag))["id"]
        a = fleet.enroll(tags={"dept": tag, "note": HOSTILE[0]}, name=HOSTILE[1])
        b = fleet.enroll(tags={"dept": tag}, name="plain")
        check()  # enrolled: no report yet
        with engine.begin() as conn:
            _reenroll(conn, fleet, a, HOSTILE[8], {"dept": tag, "=x": HOSTILE[2], "\u00e9": HOSTILE[13]})
        check()  # enrolled again: the name, system, version and tags replaced
        with engine.begin() as conn:
            assert conn.execute(sa.select(devices.c.name_csv).where(devices.c.id == a.device_id)).scalar_one() \
                == export.csv_cell(HOSTILE[8])
        assert fleet.post(a, upload(hostile_report(), seq=5, sweep_id=sweep_id)).status_code == 200
        assert fleet.post(b, upload(sample_report(), seq=1)).status_code == 200
        check()  # a report: its last contact and verdict; a's answers the sweep
        assert fleet.post(a, upload(sample_report(), seq=3)).status_code == 200
        check()  # a late, older report: a newer last contact, the verdict stays
        with engine.begin() as conn:
            assert store.revoke_device(conn, b.device_id, now) is not None
        check()  # revoked
        with engine.begin() as conn:
            assert store.readmit_device(conn, b.device_id)
        check()  # readmitted
        with engine.begin() as conn:
            seen = conn.execute(sa.select(devices.c.last_seen_iso, devices.c.last_verdict)
                                .where(devices.c.id == a.device_id)).one()
            answered = conn.execute(sa.select(sweep_responses.c.verdict)
                                    .where(sweep_responses.c.device_id == a.device_id)).scalar_one()
        assert seen.last_seen_iso is not None and seen.last_verdict == hostile_report()["verdict"] == answered
    finally:
        engine.dispose()


def test_the_formula_pattern_covers_every_code_point_neutralise_prefixes() -> None:
    """``copy_export`` finds the formula characters in the planes it reads; no other plane has one."""
    skipped = [cp for cp in range(0x110000) if not any(cp in p for p in copy_export._PLANES)
               and not 0xD800 <= cp <= 0xDFFF]
    assert all(export.neutralise(chr(cp) + "x") == chr(cp) + "x" for cp in skipped)
    assert all(export.neutralise(chr(cp) + "=") == chr(cp) + "=" for cp in skipped)
