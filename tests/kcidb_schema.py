"""KCIDB v5 checks, written from the KCIDB I/O schema documentation (kcidb-io v5.x).

Not a copy of kcidb-io: the rules a submission must keep — required fields,
``origin:`` prefixed ids, origin names, the status enum, dot-separated test
paths, no nulls (absent means unknown), no unknown properties, the 16 KiB
log excerpt limit, ISO date-times and resource lists — as a Draft 2020-12
JSON Schema for ``jsonschema``.
"""

from __future__ import annotations

from typing import Any

import jsonschema

ORIGIN = "^[a-z0-9_]+$"
ORIGIN_ID = "^[a-z0-9_]+:.+$"
STATUS = ["FAIL", "ERROR", "MISS", "PASS", "DONE", "SKIP"]
TEST_PATH = r"^([a-zA-Z0-9_-]+(\.[a-zA-Z0-9_-]+)*)?$"

_id = {"type": "string", "pattern": ORIGIN_ID}
_text = {"type": "string"}
_time = {"type": "string", "format": "date-time"}
_url = {"type": "string", "format": "uri", "pattern": "^[a-z][a-z0-9+.-]*://"}
_excerpt = {"type": "string", "maxLength": 16384}
_misc = {"type": "object"}
_resources = {"type": "array", "items": {
    "type": "object", "additionalProperties": False, "required": ["name", "url"],
    "properties": {"name": {"type": "string", "pattern": "^[^/]+$"}, "url": _url}}}


def _object(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "required": required,
            "properties": {"_timestamp": _time, **properties}}


CHECKOUT = _object(["id", "origin"], {
    "id": _id, "origin": {"type": "string", "pattern": ORIGIN}, "tree_name": _text,
    "git_repository_url": {"type": "string", "pattern": "^(https|git)://.*$"},
    "git_commit_hash": {"type": "string", "pattern": "^[0-9a-f]{40}([0-9a-f]{24})?$"},
    "git_commit_name": _text, "git_commit_tags": {"type": "array", "items": _text},
    "git_commit_message": _text, "git_repository_branch": _text,
    "git_repository_branch_tip": {"type": "boolean"}, "patchset_files": _resources,
    "patchset_hash": {"type": "string", "pattern": "^$|^[0-9a-f]{64}$"},
    "message_id": _text, "comment": _text, "start_time": _time, "log_url": _url,
    "log_excerpt": _excerpt, "valid": {"type": "boolean"}, "misc": _misc,
})
BUILD = _object(["checkout_id", "id", "origin"], {
    "checkout_id": _id, "id": _id, "origin": {"type": "string", "pattern": ORIGIN},
    "comment": _text, "start_time": _time, "duration": {"type": "number"},
    "architecture": {"type": "string", "pattern": "^[a-z0-9_]*$"}, "command": _text,
    "compiler": _text, "input_files": _resources, "output_files": _resources,
    "config_name": _text, "config_url": _url, "log_url": _url, "log_excerpt": _excerpt,
    "status": {"enum": STATUS}, "misc": _misc,
})
TEST = _object(["build_id", "id", "origin"], {
    "build_id": _id, "id": _id, "origin": {"type": "string", "pattern": ORIGIN},
    "environment": {"type": "object", "additionalProperties": False, "properties": {
        "compatible": {"type": "array", "items": _text}, "comment": _text, "misc": _misc}},
    "path": {"type": "string", "pattern": TEST_PATH}, "comment": _text, "log_url": _url,
    "log_excerpt": _excerpt, "status": {"enum": STATUS},
    "number": {"type": "object", "required": ["value"], "additionalProperties": False,
               "properties": {"value": {"type": "number"}, "unit": _text,
                              "prefix": {"enum": ["metric", "binary"]}}},
    "waived": {"type": "boolean"}, "start_time": _time, "duration": {"type": "number"},
    "output_files": _resources, "misc": _misc,
})
ISSUE = _object(["id", "version", "origin"], {
    "id": _id, "version": {"type": "integer", "minimum": 0},
    "origin": {"type": "string", "pattern": ORIGIN}, "report_url": _url,
    "report_subject": _text,
    "culprit": {"type": "object", "additionalProperties": False, "properties": {
        "code": {"type": "boolean"}, "tool": {"type": "boolean"},
        "harness": {"type": "boolean"}}},
    "comment": _text, "misc": _misc,
})
INCIDENT = _object(["id", "origin", "issue_id", "issue_version"], {
    "id": _id, "origin": {"type": "string", "pattern": ORIGIN}, "issue_id": _id,
    "issue_version": {"type": "integer", "minimum": 0}, "build_id": _id, "test_id": _id,
    "present": {"type": "boolean"}, "comment": _text, "misc": _misc,
})

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object", "additionalProperties": False, "required": ["version"],
    "properties": {
        "version": {"type": "object", "additionalProperties": False, "required": ["major"],
                    "properties": {"major": {"const": 5},
                                   "minor": {"type": "integer", "minimum": 0, "maximum": 3}}},
        "checkouts": {"type": "array", "items": CHECKOUT},
        "builds": {"type": "array", "items": BUILD},
        "tests": {"type": "array", "items": TEST},
        "issues": {"type": "array", "items": ISSUE},
        "incidents": {"type": "array", "items": INCIDENT},
    },
}

_validator = jsonschema.Draft202012Validator(
    SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def errors(document: Any) -> list[str]:
    """Every violation, as ``path: message``; also every object whose origin and id disagree."""
    found = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
             for e in _validator.iter_errors(document)]
    if isinstance(document, dict):
        for kind in ("checkouts", "builds", "tests", "issues", "incidents"):
            for index, obj in enumerate(document.get(kind) or []):
                if isinstance(obj, dict) and isinstance(obj.get("id"), str) \
                        and not obj["id"].startswith(f"{obj.get('origin')}:"):
                    found.append(f"{kind}/{index}/id: not prefixed with its origin")
    return found


def validate(document: Any) -> None:
    problems = errors(document)
    if problems:
        raise AssertionError("not a valid KCIDB v5 document:\n" + "\n".join(problems))
