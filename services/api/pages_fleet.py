"""The fleet: every lab and device, a page per device and per device type."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from wrtci.services.api import queries
from wrtci.services.api import web_queries as wq
from wrtci.services.api.app import ApiError, context, known_params
from wrtci.services.api.html import Markup, element, join, link, render, table
from wrtci.services.api.layout import page
from wrtci.services.api.rest import labs_with_heartbeats
from wrtci.services.api.widgets import firmware_link, job_verdict, where
from wrtci.services.weblinks import device_href, device_type_href, job_href, lab_href, path_part

HISTORY = 5


async def _running(conn: asyncpg.Connection) -> dict[tuple[str, str], wq.JobRow]:
    jobs = await wq.job_rows(conn, "j.state = 'running'", limit=10000)
    return {(j.lab, j.device): j for j in jobs if j.lab and j.device}


async def _health(conn: asyncpg.Connection, condition: str, *args: object,
                  per_device: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"""SELECT * FROM (
              SELECT h.*, row_number() OVER (PARTITION BY lab, device ORDER BY at DESC) AS n
                FROM device_health h WHERE {condition}) x
             WHERE n <= {int(per_device)} ORDER BY lab, device, at DESC""", *args)


def _offline(lab: str) -> Markup:
    """A device's state when its lab stopped heartbeating: the last state is stale."""
    return element("span", f"lab {lab} is offline", class_="offline")


def _health_cell(health: str) -> Markup:
    return element("span", health, class_=f"h-{health}")


def _history(rows: list[asyncpg.Record]) -> Markup:
    return join((render("$at $health$check$msg", at=r["at"], health=_health_cell(r["health"]),
                        check="" if r["check_passed"] is None else
                        (" check passed" if r["check_passed"] else " check failed"),
                        msg=f" ({r['message']})" if r["message"] else "")
                 for r in rows), Markup("<br>"))


def _current(job: wq.JobRow | None, labels: dict[str, str]) -> Markup:
    if job is None:
        return Markup("")
    return join([link(job_href(job.id), job.image_name), " of ",
                 firmware_link(job.firmware_id, labels)])


async def fleet_page(request: web.Request) -> web.Response:
    known_params(request)
    ctx = context(request)
    labs = await labs_with_heartbeats(ctx)
    async with ctx.db() as conn:
        running = await _running(conn)
        history = await _health(conn, "true", per_device=HISTORY)
        labels = await wq.firmware_labels(conn, {j.firmware_id for j in running.values()})
    by_device: dict[tuple[str, str], list] = {}
    for r in history:
        by_device.setdefault((r["lab"], r["device"]), []).append(r)
    sections = []
    for lab in labs:
        online = lab.online
        state = element("span", "online" if online else "offline",
                        class_="online" if online else "offline")
        rows = [(link(device_href(d.lab, d.name), d.name),
                 link(device_type_href(d.device_type), d.device_type),
                 d.state if online else _offline(lab.name),
                 _health_cell(d.health), ", ".join(d.features),
                 _current(running.get((d.lab, d.name)), labels),
                 _history(by_device.get((d.lab, d.name), []))) for d in lab.devices]
        sections.append(render(
            '<h2 id="lab-$anchor">$name</h2><p>$state · version $version · last seen $seen'
            "</p>$devices", anchor=path_part(lab.name), name=lab.name, state=state,
            version=lab.version or "-", seen=lab.heartbeat_at or lab.last_seen or "-",
            devices=table(["device", "type", "state", "health", "features", "current job",
                           "health history"], rows) if rows else element("p", "no devices")))
    if not sections:
        sections.append(element("p", "no lab has connected yet"))
    return page("Fleet", join(sections))


async def device_page(request: web.Request) -> web.Response:
    known_params(request)
    ctx = context(request)
    lab_name, name = request.match_info["lab"], request.match_info["device"]
    labs = await labs_with_heartbeats(ctx, lab_name)
    device = next((d for lab in labs for d in lab.devices if d.name == name), None)
    if device is None:
        raise ApiError(404, f"no device {name} in lab {lab_name}")
    lab = labs[0]
    online = lab.online
    async with ctx.db() as conn:
        jobs = await wq.job_rows(conn, "j.id IN (SELECT job_id FROM job_attempts "
                                       "WHERE lab = $1 AND device = $2)", lab_name, name)
        history = await _health(conn, "lab = $1 AND device = $2", lab_name, name,
                                per_device=100)
        labels = await wq.firmware_labels(conn, {j.firmware_id for j in jobs})
    facts = table(["lab", "device type", "state", "health", "failures in a row", "features"],
                  [(link(lab_href(lab_name), lab_name),
                    link(device_type_href(device.device_type), device.device_type),
                    device.state if online else _offline(lab_name),
                    _health_cell(device.health), device.consecutive_failures,
                    ", ".join(device.features))])
    body = join([facts, element("h2", "Jobs"), _jobs_table(jobs, labels, show_where=False),
                 element("h2", "Health checks"), _health_table(history)])
    return page(f"Device {name}", body, subtitle=f"in lab {lab_name}")


async def device_type_page(request: web.Request) -> web.Response:
    known_params(request)
    ctx = context(request)
    device_type = request.match_info["device_type"]
    online = {lab.name for lab in await labs_with_heartbeats(ctx) if lab.online}
    async with ctx.db() as conn:
        devices = await queries.devices(conn, device_type=device_type)
        jobs = await wq.job_rows(conn, "j.device_type = $1", device_type)
        if not devices and not jobs:
            raise ApiError(404, f"no device or job of device type {device_type}")
        history = await _health(conn, "device_type = $1", device_type, per_device=20)
        labels = await wq.firmware_labels(conn, {j.firmware_id for j in jobs})
    rows = [(link(device_href(d.lab, d.name), d.name),
             link(lab_href(d.lab), d.lab),
             d.state if d.lab in online else _offline(d.lab),
             _health_cell(d.health), ", ".join(d.features)) for d in devices]
    body = join([
        element("h2", "Devices"),
        table(["device", "lab", "state", "health", "features"], rows) if rows
        else element("p", f"no lab has device type {device_type}"),
        element("h2", "Jobs across firmware"), _jobs_table(jobs, labels),
        element("h2", "Health checks"), _health_table(history)])
    return page(f"Device type {device_type}", body)


def _jobs_table(jobs: list[wq.JobRow], labels: dict[str, str], show_where: bool = True
                ) -> Markup:
    if not jobs:
        return element("p", "no jobs")
    return table(["firmware", "job", "verdict", "where" if show_where else "device type",
                  "finished"], [
        (firmware_link(j.firmware_id, labels), link(job_href(j.id), j.image_name),
         job_verdict(j), where(j.lab, j.device) if show_where else j.device_type,
         j.finished_at or "") for j in jobs])


def _health_table(rows: list[asyncpg.Record]) -> Markup:
    if not rows:
        return element("p", "no health reports")
    return table(["at", "device", "health", "state", "check", "message"], [
        (r["at"], link(device_href(r["lab"], r["device"]), f"{r['lab']} / {r['device']}"),
         _health_cell(r["health"]), r["state"],
         "" if r["check_passed"] is None else ("passed" if r["check_passed"] else "failed"),
         r["message"] or "") for r in rows])


def add_routes(app: web.Application) -> None:
    app.router.add_get("/fleet", fleet_page)
    app.router.add_get("/devices/{lab}/{device}", device_page)
    app.router.add_get("/device-types/{device_type:.+}", device_type_page)
