"""``/api/v1/openapi.json``: the REST API as an OpenAPI 3.1 document.

Response schemas come from the very msgspec Structs the handlers encode
(``msgspec.json.schema_components``), so the document cannot drift from the
answers; the endpoint table below lists paths and their query parameters.
"""

from __future__ import annotations

import functools
from typing import Any

import msgspec

from wrtci.proto.model import (
    DeviceHealth,
    DeviceState,
    FirmwareState,
    JobResult,
    JobState,
    SourceKind,
    TestStatus,
)

_REF = "#/components/schemas/{name}"


class ErrorBody(msgspec.Struct, kw_only=True):
    error: str
    """What was wrong, for a person to read."""


def _text(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": {"type": "string"}}


def _choice(name: str, values: type, description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": {"type": "string", "enum": sorted(v.value for v in values)}}


def _flag(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": {"type": "boolean"}}


_PAGE = [
    {"name": "limit", "in": "query", "required": False, "description": "items per page",
     "schema": {"type": "integer", "minimum": 1}},
    {"name": "offset", "in": "query", "required": False,
     "description": "items to skip (the `next` URL of a page carries it)",
     "schema": {"type": "integer", "minimum": 0}},
]


def _id(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": {"type": "string"}}


def _endpoints() -> list[tuple[str, str, list[dict[str, Any]], Any, bool]]:
    """(path, summary, parameters, response type, paginated)."""
    from wrtci.services.api import list_queries, queries
    from wrtci.services.api.rest import FirmwareDetail, LabDetail  # rest imports this module
    return [
        ("/api/v1/firmware", "Firmware, newest first, with where its jobs are",
         [_text("channel", "snapshot, stable, a release branch"),
          _choice("state", FirmwareState, "the firmware's state"),
          _choice("source", SourceKind, "where the firmware came from"), *_PAGE],
         queries.FirmwareItem, True),
        ("/api/v1/firmware/{firmware_id}", "One firmware, its summary and its jobs",
         [_id("firmware_id", "firmware id (percent-encoded)")], FirmwareDetail, False),
        ("/api/v1/jobs", "Jobs, newest first",
         [_text("firmware", "firmware id"), _text("device_type", "target/subtarget/profile"),
          _choice("state", JobState, "queued, running or done"),
          _choice("result", JobResult, "the verdict of a done job"),
          _text("lab", "lab name"), _text("device", "device name"), *_PAGE],
         queries.JobItem, True),
        ("/api/v1/jobs/{job_id}", "One job: every attempt with its tests, and incidents",
         [_id("job_id", "job id (percent-encoded)")], queries.JobDetail, False),
        ("/api/v1/jobs/{job_id}/attempts/{attempt}/log",
         "A job attempt's console log (or another stream), streamed as text",
         [_id("job_id", "job id (percent-encoded)"),
          {"name": "attempt", "in": "path", "required": True,
           "schema": {"type": "integer", "minimum": 1}},
          _text("stream", "console (default), junit.xml, results.json, pytest.log")],
         None, False),
        ("/api/v1/health-logs/{lab}/{device}/{check}/{file}",
         "The console log (or pytest.log) of a device's failing health check, as text",
         [_id("lab", "lab name"), _id("device", "device name"),
          _id("check", "check id (UTC time and a tag)"),
          _id("file", "console.log or pytest.log")],
         None, False),
        ("/api/v1/devices", "Every device of every lab",
         [_text("lab", "lab name"), _text("device_type", "target/subtarget/profile"),
          _choice("state", DeviceState, "the device's state"),
          _choice("health", DeviceHealth, "the device's health"), *_PAGE],
         list_queries.DeviceListItem, True),
        ("/api/v1/tests", "Test results, newest job first",
         [_text("firmware", "firmware id"), _text("job", "job id"),
          _text("device_type", "target/subtarget/profile"),
          _text("path", "test path as the lab reported it"),
          _choice("status", TestStatus, "KCIDB status"),
          _flag("latest", "only each job's latest attempt"), *_PAGE],
         list_queries.TestItem, True),
        ("/api/v1/labs", "Labs with their devices and live heartbeat", [], None, False),
        ("/api/v1/labs/{lab}", "One lab with its devices' health history",
         [_id("lab", "lab name"),
          {"name": "health_limit", "in": "query", "required": False,
           "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}],
         LabDetail, False),
        ("/api/v1/regressions", "Regressions, newest first",
         [_text("firmware", "first failing or fixing firmware id"),
          _text("device_type", "target/subtarget/profile"),
          _flag("open", "only regressions not fixed yet"), *_PAGE],
         queries.RegressionItem, True),
        ("/api/v1/flaky", "Flaky tests by score",
         [_text("device_type", "target/subtarget/profile"),
          _flag("all", "also tests below the flakiness threshold"), *_PAGE],
         queries.FlakyItem, True),
    ]


def _page_schema(item_ref: str) -> dict[str, Any]:
    return {"type": "object", "required": ["items", "total", "limit", "offset", "next"],
            "properties": {"items": {"type": "array", "items": {"$ref": item_ref}},
                           "total": {"type": "integer"}, "limit": {"type": "integer"},
                           "offset": {"type": "integer"},
                           "next": {"anyOf": [{"type": "string"}, {"type": "null"}],
                                    "description": "URL of the next page"}}}


@functools.cache
def document() -> dict[str, Any]:
    endpoints = _endpoints()
    types = [ErrorBody, *(e[3] for e in endpoints if e[3] is not None)]
    refs, components = msgspec.json.schema_components(types, ref_template=_REF)
    ref_of = dict(zip(types, refs, strict=True))
    error = {"description": "bad request / not found / unavailable",
             "content": {"application/json": {"schema": ref_of[ErrorBody]}}}
    paths: dict[str, Any] = {}
    for path, summary, params, response_type, paginated in endpoints:
        if response_type is None:
            content = {"text/plain": {"schema": {"type": "string"}}} if "log" in path else \
                {"application/json": {"schema": {"type": "object"}}}
        else:
            ref = ref_of[response_type]["$ref"]
            schema = _page_schema(ref) if paginated else {"$ref": ref}
            content = {"application/json": {"schema": schema}}
        paths[path] = {"get": {
            "summary": summary, "parameters": params,
            "responses": {"200": {"description": "OK", "content": content},
                          "400": error, "404": error, "503": error}}}
    auth = {"description": "no valid token (401) or a token of another scope (403)",
            "content": {"application/json": {"schema": ref_of[ErrorBody]}}}
    for collection, what in (("jobs", "job"), ("firmware", "firmware")):
        for verb in ("retry", "cancel"):
            paths[f"/api/v1/{collection}/{{object_id}}/{verb}"] = {"post": {
                "summary": f"{verb.capitalize()} a {what} (an API token of scope control)",
                "security": [{"bearer": []}],
                "parameters": [_id("object_id", f"{what} id (percent-encoded)")],
                "responses": {"202": {"description": "requested",
                                      "content": {"application/json": {
                                          "schema": {"type": "object"}}}},
                              "400": error, "401": auth, "403": auth, "404": error,
                              "503": error}}}
    return {"openapi": "3.1.0",
            "info": {"title": "wrtci", "version": "1",
                     "description": "Results of OpenWrt firmware on lab devices. Unknown "
                                    "query parameters are refused (400). Errors are "
                                    '{"error": "..."}.'},
            "paths": paths,
            "components": {"schemas": components,
                           "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}}}
