"""``/api/v1/openapi.json``: the REST API as an OpenAPI 3.1 document.

Response schemas come from the very msgspec Structs the handlers encode
(``msgspec.json.schema_components``), so the document cannot drift from the
answers; query parameters come from ``params``, the tables the handlers parse
requests with, so the document cannot drift from what is accepted either. The
endpoint table below lists paths, path parameters and response types.
"""

from __future__ import annotations

import functools
from typing import Any

import msgspec

from wrtci.services.api import params
from wrtci.services.api.params import Query

_REF = "#/components/schemas/{name}"


class ErrorBody(msgspec.Struct, kw_only=True):
    error: str
    """What was wrong, for a person to read."""


def _id(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": {"type": "string"}}


_NONE: Query = Query(dict, ())


def _endpoints() -> list[tuple[str, str, list[dict[str, Any]], Query, Any]]:
    """(path, summary, path parameters, query parameters, response type)."""
    from wrtci.services.api import list_queries, queries
    from wrtci.services.api.rest import FirmwareDetail, LabDetail  # rest imports this module
    job_id = _id("job_id", "job id (percent-encoded)")
    return [
        ("/api/v1/firmware", "Firmware, newest first, with where its jobs are",
         [], params.FIRMWARE, queries.FirmwareItem),
        ("/api/v1/firmware/{firmware_id}", "One firmware, its summary and its jobs",
         [_id("firmware_id", "firmware id (percent-encoded)")], _NONE, FirmwareDetail),
        ("/api/v1/jobs", "Jobs, newest first", [], params.JOBS, queries.JobItem),
        ("/api/v1/jobs/{job_id}", "One job: every attempt with its tests, and incidents",
         [job_id], _NONE, queries.JobDetail),
        ("/api/v1/jobs/{job_id}/attempts/{attempt}/log",
         "A job attempt's console log (or another stream), streamed as text",
         [job_id, {"name": "attempt", "in": "path", "required": True,
                   "schema": {"type": "integer", "minimum": 1}}],
         params.LOG, None),
        ("/api/v1/health-logs/{lab}/{device}/{check}/{file}",
         "The console log (or pytest.log) of a device's failing health check, as text",
         [_id("lab", "lab name"), _id("device", "device name"),
          _id("check", "check id (UTC time and a tag)"),
          _id("file", "console.log or pytest.log")], _NONE, None),
        ("/api/v1/devices", "Every device of every lab",
         [], params.DEVICES, list_queries.DeviceListItem),
        ("/api/v1/tests", "Test results, newest job first",
         [], params.TESTS, list_queries.TestItem),
        ("/api/v1/labs", "Labs with their devices and live heartbeat", [], _NONE, None),
        ("/api/v1/labs/{lab}", "One lab with its devices' health history",
         [_id("lab", "lab name")], params.LAB, LabDetail),
        ("/api/v1/regressions", "Regressions, newest first",
         [], params.REGRESSIONS, queries.RegressionItem),
        ("/api/v1/flaky", "Flaky tests by score", [], params.FLAKY, queries.FlakyItem),
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
    types = [ErrorBody, *(e[4] for e in endpoints if e[4] is not None)]
    refs, components = msgspec.json.schema_components(types, ref_template=_REF)
    ref_of = dict(zip(types, refs, strict=True))
    error = {"description": "bad request / not found / unavailable",
             "content": {"application/json": {"schema": ref_of[ErrorBody]}}}
    paths: dict[str, Any] = {}
    for path, summary, path_params, query, response_type in endpoints:
        if response_type is None:
            content = {"text/plain": {"schema": {"type": "string"}}} if "log" in path else \
                {"application/json": {"schema": {"type": "object"}}}
        else:
            ref = ref_of[response_type]["$ref"]
            schema = _page_schema(ref) if query.paged else {"$ref": ref}
            content = {"application/json": {"schema": schema}}
        paths[path] = {"get": {
            "summary": summary, "parameters": path_params + query.openapi(),
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
