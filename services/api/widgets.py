"""Pieces the web pages share: links by name, verdict badges, filter forms, pagers."""

from __future__ import annotations

from aiohttp import web

from wrtci.services.api.html import Markup, element, escape, join, link, query
from wrtci.services.api.web_queries import VERDICT_LABELS, FirmwareRow, JobRow, firmware_label
from wrtci.services.weblinks import device_href, firmware_href, lab_href


def firmware_link(firmware_id: str, labels: dict[str, str] | None = None) -> Markup:
    label = (labels or {}).get(firmware_id, firmware_id)
    return element("a", label, href=firmware_href(firmware_id), title=firmware_id)


def fw_row_link(row: FirmwareRow) -> Markup:
    return element("a", firmware_label(row), href=firmware_href(row.id), title=row.id)


def verdict(kind: str, count: int | None = None, text: str | None = None) -> Markup:
    label = text or VERDICT_LABELS.get(kind, kind)
    if kind == "regression" and count:
        label = f"{count} regression" + ("s" if count != 1 else "")
    return element("span", label, class_=f"v-{kind} verdict")


def firmware_verdict(row: FirmwareRow) -> Markup:
    if row.verdict == "running":
        done = row.jobs - row.queued - row.running
        return verdict("running", text=f"running ({done}/{row.jobs} done)")
    return verdict(row.verdict, row.regressions)


def job_verdict(job: JobRow) -> Markup:
    text = None
    if job.verdict == "error" and job.error_code:
        text = f"infra error: {job.error_code.replace('_', ' ')}"
    return verdict(job.verdict, job.regressions, text)


def where(lab: str | None, device: str | None) -> Markup:
    if not lab:
        return Markup("")
    parts = [link(lab_href(lab), lab)]
    if device:
        parts.append(link(device_href(lab, device), device))
    return join(parts, " / ")


def select(name: str, choices: list[tuple[str, str]], current: str | None) -> Markup:
    options = [element("option", "any", value="")] + [
        Markup(f'<option value="{escape(value)}"{" selected" if value == current else ""}>'
               f"{escape(label)}</option>") for value, label in choices]
    return element("label", join([f"{name.replace('_', ' ')} ",
                                  element("select", join(options), name=name)]))


def text_input(name: str, current: str | None) -> Markup:
    return element("label", join([f"{name.replace('_', ' ')} ", Markup(
        f'<input name="{escape(name)}" value="{escape(current or "")}" size="14">')]))


def filter_form(action: str, fields: list[Markup]) -> Markup:
    return element("form", join([*fields, element("button", "Filter")], " "),
                   method="get", action=action, class_="filters")


def pager(request: web.Request, shown: int, total: int, limit: int, offset: int) -> Markup:
    nav = []
    params = {k: v for k, v in request.query.items() if k not in ("offset", "limit")}
    if offset > 0:
        nav.append(link(request.path + "?" + query(**params, offset=max(0, offset - limit),
                                                   limit=limit), "newer"))
    if offset + shown < total:
        nav.append(link(request.path + "?" + query(**params, offset=offset + shown,
                                                   limit=limit), "older"))
    return element("p", join([f"{total} in all", *nav], " · "))
