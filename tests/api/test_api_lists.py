"""REST list endpoints (jobs, devices, tests), the OpenAPI document, unknown parameters."""

from __future__ import annotations

import re
from urllib.parse import urlencode

import pytest

from tests.api_support import scenario, serving
from wrtci.services.api import openapi


@pytest.fixture
async def api(js, nats_config, database_config, storage_config):
    async with serving(nats_config, database_config, storage_config) as client:
        yield client


async def test_jobs_devices_tests_lists_filter_and_page(api, js, subjects, pool,
                                                        storage_config):
    s = await scenario(js, subjects, pool, storage_config)

    status, jobs = await api.get("/api/v1/jobs")
    assert status == 200 and jobs["total"] == 3 and jobs["next"] is None
    assert sorted(j["firmware_id"] for j in jobs["items"]) == sorted([s.good, s.bad, s.stable])
    assert {s.good_job, s.bad_job} <= {j["id"] for j in jobs["items"]}
    _, failed = await api.get("/api/v1/jobs", result="fail")
    assert [j["id"] for j in failed["items"]] == [s.bad_job]
    _, of_good = await api.get("/api/v1/jobs", firmware=s.good)
    assert [j["id"] for j in of_good["items"]] == [s.good_job]
    _, queued = await api.get("/api/v1/jobs", state="queued", device_type="x86/64/generic")
    assert [j["firmware_id"] for j in queued["items"]] == [s.stable]
    _, first = await api.get("/api/v1/jobs", limit=2)
    _, second = await api.get(first["next"])
    assert len(first["items"]) == 2 and len(second["items"]) == 1
    assert {j["id"] for j in first["items"] + second["items"]} == {j["id"] for j in
                                                                  jobs["items"]}

    _, devices = await api.get("/api/v1/devices")
    assert [(d["lab"], d["name"], d["device_type"], d["health"], d["lab_online"])
            for d in devices["items"]] == [("lab-a", "dut-1", "x86/64/generic", "warning",
                                           True)]
    _, none = await api.get("/api/v1/devices", health="healthy")
    assert none["items"] == [] and none["total"] == 0

    _, tests = await api.get("/api/v1/tests", firmware=s.bad)
    # Attempt 1 was a boot failure with no tests: three tests, all from attempt 2.
    assert tests["total"] == 3 and {t["attempt"] for t in tests["items"]} == {2}
    _, fails = await api.get("/api/v1/tests", status="FAIL", latest="true")
    assert sorted(t["path"] for t in fails["items"]) == sorted(
        ["base.test_wifi", "base.test_<script>alert('x')</script>&"])
    _, one = await api.get("/api/v1/tests?" + urlencode({"job": s.good_job,
                                                        "path": "base.test_shell"}))
    assert [(t["status"], t["firmware_id"]) for t in one["items"]] == [("PASS", s.good)]


@pytest.mark.parametrize(("path", "params", "message"), [
    ("/api/v1/jobs", {"state": "sleeping"}, "state must be one of"),
    ("/api/v1/jobs", {"limit": "0"}, "limit must be between"),
    ("/api/v1/jobs", {"statte": "done"}, "unknown query parameter 'statte'"),
    ("/api/v1/devices", {"health": "great"}, "health must be one of"),
    ("/api/v1/tests", {"status": "waived"}, "status must be one of"),
    ("/api/v1/tests", {"latest": "maybe"}, "latest must be true or false"),
    ("/api/v1/tests", {"offset": "-1"}, "offset must be between"),
    ("/api/v1/firmware", {"chanel": "snapshot"}, "unknown query parameter 'chanel'"),
    ("/api/v1/labs", {"x": "1"}, "unknown query parameter 'x'"),
    ("/api/v1/openapi.json", {"v": "2"}, "unknown query parameter 'v'"),
    ("/api/v1/jobs/nosuch", {"verbose": "1"}, "unknown query parameter 'verbose'"),
])
async def test_bad_queries_are_json_400s(api, path, params, message):
    status, body = await api.get(path, **params)
    assert status == 400, body
    assert message in body["error"]


async def test_every_endpoint_takes_the_query_parameters_its_document_lists(api):
    """The handlers parse and the document lists one table (services/api/params.py): an
    unknown parameter's refusal names exactly the documented ones, and an enum parameter
    refuses a value with exactly the documented values."""
    _, doc = await api.get("/api/v1/openapi.json")
    checked = 0
    for template, operations in doc["paths"].items():
        if "get" not in operations:
            continue
        path = re.sub(r"\{[^}]+\}", "1", template)
        documented = [p for p in operations["get"]["parameters"] if p["in"] == "query"]
        status, body = await api.get(path, bogus="1")
        takes = ", ".join(p["name"] for p in documented) or "no parameters"
        assert (status, body) == (400, {"error": f"unknown query parameter 'bogus' "
                                                 f"(this takes {takes})"}), template
        for param in documented:
            if "enum" in param["schema"]:
                status, body = await api.get(path, **{param["name"]: "bogus"})
                values = ", ".join(param["schema"]["enum"])
                assert (status, body) == (400, {"error": f"{param['name']} must be one of "
                                                         f"{values}"}), template
                checked += 1
    assert checked == 7  # firmware state/source, job state/result, device state/health, status


async def test_openapi_document_describes_the_answers(api, js, subjects, pool,
                                                      storage_config):
    status, doc = await api.get("/api/v1/openapi.json")
    assert status == 200 and doc["openapi"] == "3.1.0"
    assert doc == openapi.document()
    for path in ("/api/v1/jobs", "/api/v1/devices", "/api/v1/tests", "/api/v1/firmware"):
        get = doc["paths"][path]["get"]
        assert {"limit", "offset"} <= {p["name"] for p in get["parameters"]}
    schemas = doc["components"]["schemas"]
    # the control endpoints, with the token they need and its refusals
    retry = doc["paths"]["/api/v1/jobs/{object_id}/retry"]["post"]
    assert retry["security"] == [{"bearer": []}] and {"401", "403"} <= set(retry["responses"])
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert "get" in doc["paths"]["/api/v1/health-logs/{lab}/{device}/{check}/{file}"]

    # Every field of a real answer is a property of its schema, and the required ones are
    # there: the document is built from the same Structs the handlers encode.
    await scenario(js, subjects, pool, storage_config)
    for path, name in (("/api/v1/jobs", "JobItem"), ("/api/v1/devices", "DeviceListItem"),
                       ("/api/v1/tests", "TestItem")):
        _, page = await api.get(path)
        schema = schemas[name]
        for item in page["items"]:
            assert set(item) <= set(schema["properties"]), (name, set(item))
            assert set(schema["required"]) <= set(item)
