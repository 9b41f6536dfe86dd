"""``wrtci show``: results as the web page shows them, read through the REST API.

``wrtci show firmware [--channel C --state S --source K]``  the newest firmware
``wrtci show firmware ID``   its summary per device type and its jobs
``wrtci show job ID``        every attempt with its tests
``wrtci show labs``          labs, devices and their health
``wrtci show log JOB [ATTEMPT] [--stream junit.xml]``  a console log, streamed

The API's URL comes from the ``[api]`` section of the site file (``--url`` overrides).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any
from urllib.parse import quote

import aiohttp
import msgspec

from wrtci.core.config import load_config
from wrtci.services.api.config import Config as ApiConfig
from wrtci.services.cli.common import add_command, command_group, env_token
from wrtci.services.cli.summary_cmd import format_summary
from wrtci.services.summary import FirmwareSummary

TIMEOUT = aiohttp.ClientTimeout(total=None, connect=10, sock_read=60)


class ApiFailure(Exception):
    pass


def add_parser(sub: argparse._SubParsersAction) -> None:
    what = command_group(sub, "show", "firmware, jobs, labs and logs from the REST API")
    firmware = add_command(what, "firmware", run_show, "the firmware list, or one firmware")
    firmware.add_argument("id", nargs="?", help="firmware id (none: the newest firmware)")
    firmware.add_argument("--channel")
    firmware.add_argument("--state")
    firmware.add_argument("--source")
    firmware.add_argument("--limit", type=int, default=20)
    job = add_command(what, "job", run_show, "one job: attempts and tests")
    job.add_argument("id", help="job id")
    labs = add_command(what, "labs", run_show, "labs and their devices")
    log = add_command(what, "log", run_show, "the console log (or an artifact) of a job attempt")
    log.add_argument("id", help="job id")
    log.add_argument("attempt", nargs="?", type=int, help="attempt (default: the job's last)")
    log.add_argument("--stream", default="console", help="console, junit.xml, ...")
    for command in (firmware, job, labs, log):
        command.add_argument("--url", help="API base URL (default: from the [api] section)")
        command.add_argument("--json", action="store_true", help="print the API's JSON")


def api_url(args: argparse.Namespace) -> str:
    if args.url:
        return args.url.rstrip("/")
    section = load_config(ApiConfig, args.config).api
    host = "127.0.0.1" if section.host in ("0.0.0.0", "::") else section.host
    return f"http://{host}:{section.port}"


async def _get(session: aiohttp.ClientSession, url: str, **params: Any) -> Any:
    async with session.get(url, params={k: v for k, v in params.items() if v is not None}) as r:
        body = await r.read()
        if r.status != 200:
            try:
                message = msgspec.json.decode(body)["error"]
            except (msgspec.DecodeError, KeyError, TypeError):
                message = body[:200].decode(errors="replace")
            raise ApiFailure(f"{r.status}: {message}")
        return msgspec.json.decode(body)


def _firmware_lines(page: dict) -> list[str]:
    lines = [f"{f['id']}  {f['version']} {f['revision'] or ''}  {f['channel']}  {f['state']}  "
             f"jobs {f['done']}/{f['jobs']} done, {f['running']} running, {f['queued']} queued"
             for f in page["items"]]
    return [*lines, f"({len(page['items'])} of {page['total']})"]


def _one_firmware_lines(detail: dict) -> list[str]:
    lines = []
    if detail["summary"] is not None:
        lines.append(format_summary(msgspec.convert(detail["summary"], FirmwareSummary)))
    for job in detail["jobs"]:
        outcome = job["result"] or job["state"]
        if job["error_code"]:
            outcome += f" ({job['error_code']})"
        where = f"{job['lab']}/{job['device']}" if job["lab"] else (
            "waiting for a lab" if job["waiting_for_lab"] else "-")
        lines.append(f"  job {job['id']}: {outcome}, attempt {job['attempt']}, {where}")
    return lines


def _job_lines(detail: dict) -> list[str]:
    job = detail["job"]
    lines = [f"{job['id']}  {job['device_type']}  {job['result'] or job['state']}"]
    for attempt in detail["attempts"]:
        error = f" {attempt['error_code']}" if attempt["error_code"] else ""
        lines.append(f"  attempt {attempt['attempt']}: {attempt['result'] or attempt['state']}"
                     f"{error} on {attempt['lab'] or '-'}/{attempt['device'] or '-'}")
        lines += [f"    {t['status']:5} {t['path']}" for t in attempt["tests"]]
    lines += [f"  incident {i['title'] or i['issue_id']} (attempt {i['attempt']})"
              for i in detail["incidents"]]
    return lines


def _labs_lines(body: dict) -> list[str]:
    lines = []
    for lab in body["items"]:
        live = f"heartbeat {lab['heartbeat_at']}" if lab["heartbeat_at"] else "no heartbeat"
        lines.append(f"{lab['name']}  {'online' if lab['online'] else 'offline'}  {live}")
        lines += [f"  {d['name']}  {d['device_type']}  {d['state']}  {d['health']}"
                  for d in lab["devices"]]
    return lines


async def _stream_log(session: aiohttp.ClientSession, base: str, args) -> None:
    job_path = f"{base}/api/v1/jobs/{quote(args.id, safe='')}"
    attempt = args.attempt or (await _get(session, job_path))["job"]["attempt"]
    async with session.get(f"{job_path}/attempts/{attempt}/log",
                           params={"stream": args.stream}) as r:
        if r.status != 200:
            raise ApiFailure(f"{r.status}: {(await r.read())[:200].decode(errors='replace')}")
        async for chunk in r.content.iter_chunked(64 * 1024):
            sys.stdout.buffer.write(chunk)
    sys.stdout.flush()


async def _show(args: argparse.Namespace) -> None:
    base = api_url(args)
    token = env_token()  # needed where [api] require_read_token is set
    headers = {"Authorization": f"Bearer {token}"} if token else None
    async with aiohttp.ClientSession(timeout=TIMEOUT, headers=headers) as session:
        if args.show_command == "log":
            await _stream_log(session, base, args)
            return
        if args.show_command == "firmware" and args.id is None:
            body = await _get(session, f"{base}/api/v1/firmware", channel=args.channel,
                              state=args.state, source=args.source, limit=args.limit)
            lines = _firmware_lines
        elif args.show_command == "firmware":
            body = await _get(session, f"{base}/api/v1/firmware/{quote(args.id, safe='')}")
            lines = _one_firmware_lines
        elif args.show_command == "job":
            body = await _get(session, f"{base}/api/v1/jobs/{quote(args.id, safe='')}")
            lines = _job_lines
        else:
            body = await _get(session, f"{base}/api/v1/labs")
            lines = _labs_lines
    if args.json:
        print(msgspec.json.format(msgspec.json.encode(body), indent=2).decode())
    else:
        print("\n".join(lines(body)))


def run_show(args: argparse.Namespace) -> int:
    try:
        asyncio.run(_show(args))
    except ApiFailure as exc:
        print(f"wrtci: {exc}", file=sys.stderr)
        return 1
    except aiohttp.ClientError as exc:
        print(f"wrtci: cannot reach the API: {exc}", file=sys.stderr)
        return 1
    return 0
