"""The REST endpoints' query parameters, declared once.

Each endpoint's table (name, type or enum, description) is what its handler
parses the request with (``Query.parse``: unknown parameters refused, values
checked, the filter built) and what the OpenAPI document lists
(``Query.openapi``): a parameter added here is taken and documented, never
only one of the two.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Generic, TypeVar

from aiohttp import web

from wrtci.proto.model import (
    DeviceHealth,
    DeviceState,
    FirmwareState,
    JobResult,
    JobState,
    SourceKind,
    TestStatus,
)
from wrtci.services.api import list_queries, queries
from wrtci.services.api.app import (
    ApiError,
    bool_param,
    choice_param,
    int_param,
    known_params,
    text_param,
)
from wrtci.services.api.logs import STREAM_NAME

F = TypeVar("F")

# limit and offset: read by app.page_param (the largest limit is configured).
PAGE_NAMES = ("limit", "offset")
_PAGE = [
    {"name": "limit", "in": "query", "required": False, "description": "items per page",
     "schema": {"type": "integer", "minimum": 1}},
    {"name": "offset", "in": "query", "required": False,
     "description": "items to skip (the `next` URL of a page carries it)",
     "schema": {"type": "integer", "minimum": 0}},
]


@dataclass(frozen=True)
class Param:
    """One query parameter: text (at most max_length), one of an enum's values, a flag
    (true/false), an integer (default, low, high), or a name matching a pattern (the
    default when absent; the description says what it must be)."""

    name: str
    description: str
    enum: type[Enum] | None = None
    flag: bool = False
    integer: tuple[int, int, int] | None = None
    max_length: int = 200
    pattern: re.Pattern[str] | None = None
    default: str | None = None
    field: str = ""
    """The filter's attribute it sets, when not the name."""

    def parse(self, request: web.Request) -> Any:
        if self.enum is not None:
            return choice_param(request, self.name,
                                frozenset(v.value for v in self.enum))
        if self.flag:
            return bool_param(request, self.name)
        if self.integer is not None:
            return int_param(request, self.name, *self.integer)
        if self.pattern is not None:
            value = request.query.get(self.name) or self.default
            if value is None or not self.pattern.match(value):
                raise ApiError(400, f"{self.name} must be {self.description}")
            return value
        return text_param(request, self.name, self.max_length)

    def openapi(self) -> dict[str, Any]:
        if self.enum is not None:
            schema: dict[str, Any] = {"type": "string",
                                      "enum": sorted(v.value for v in self.enum)}
        elif self.flag:
            schema = {"type": "boolean"}
        elif self.integer is not None:
            schema = {"type": "integer", "minimum": self.integer[1],
                      "maximum": self.integer[2]}
        elif self.pattern is not None:
            schema = {"type": "string", "pattern": self.pattern.pattern,
                      "default": self.default}
        else:
            schema = {"type": "string"}
        return {"name": self.name, "in": "query", "required": False,
                "description": self.description, "schema": schema}


@dataclass(frozen=True)
class Query(Generic[F]):
    """An endpoint's query parameters and the filter they build."""

    build: Callable[..., F]
    params: tuple[Param, ...]
    paged: bool = False

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params) + (PAGE_NAMES if self.paged else ())

    def parse(self, request: web.Request) -> F:
        """The filter, or a 400 for an unknown parameter or a bad value."""
        known_params(request, *self.names)
        return self.build(**{p.field or p.name: p.parse(request) for p in self.params})

    def openapi(self) -> list[dict[str, Any]]:
        return [p.openapi() for p in self.params] + (_PAGE if self.paged else [])


_DEVICE_TYPE = Param("device_type", "target/subtarget/profile")

FIRMWARE = Query(queries.FirmwareFilter, (
    Param("channel", "snapshot, stable, a release branch"),
    Param("state", "the firmware's state", enum=FirmwareState),
    Param("source", "where the firmware came from", enum=SourceKind)), paged=True)

JOBS = Query(list_queries.JobFilter, (
    Param("firmware", "firmware id", max_length=500), _DEVICE_TYPE,
    Param("state", "queued, running or done", enum=JobState),
    Param("result", "the verdict of a done job", enum=JobResult),
    Param("lab", "lab name"), Param("device", "device name")), paged=True)

DEVICES = Query(list_queries.DeviceFilter, (
    Param("lab", "lab name"), _DEVICE_TYPE,
    Param("state", "the device's state", enum=DeviceState),
    Param("health", "the device's health", enum=DeviceHealth)), paged=True)

TESTS = Query(list_queries.TestFilter, (
    Param("firmware", "firmware id", max_length=500),
    Param("job", "job id", max_length=1000), _DEVICE_TYPE,
    Param("path", "test path as the lab reported it", max_length=1000),
    Param("status", "KCIDB status", enum=TestStatus),
    Param("latest", "only each job's latest attempt", flag=True)), paged=True)

_STREAM = Param("stream", "a file name such as console (the default), junit.xml, "
                "results.json or pytest.log", pattern=STREAM_NAME, default="console")

LOG = Query(dict, (_STREAM,))

LIVE_LOG = Query(dict, (
    _STREAM, Param("after", "RUN.SEQ to go on after (else the Last-Event-ID header)")))

LAB = Query(dict, (
    Param("health_limit", "how many health reports, newest first (default 50)",
          integer=(50, 1, 1000)),))

REGRESSIONS = Query(queries.RegressionFilter, (
    Param("firmware", "first failing or fixing firmware id", max_length=500), _DEVICE_TYPE,
    Param("open", "only regressions not fixed yet", flag=True, field="open_only")),
    paged=True)

FLAKY = Query(queries.FlakyFilter, (
    _DEVICE_TYPE,
    Param("all", "also tests below the flakiness threshold", flag=True,
          field="include_steady")), paged=True)
"""Parsed for the REST list and for the web page ``/flaky`` alike."""
