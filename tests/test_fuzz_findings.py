"""What fuzzing the live API with Schemathesis found (scripts/fuzz_api.py, `make fuzz`), each kept
as a test of the right behaviour so that it fails if the finding comes back."""

from __future__ import annotations

import re
from typing import Any

import pytest

HTTP_METHODS = ("get", "put", "post", "delete", "patch")


async def spec_of(client) -> dict[str, Any]:
    response = await client.get("/v1/openapi.json")
    assert response.status_code == 200
    spec: dict[str, Any] = response.json()
    return spec


def operations(spec: dict[str, Any]):
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield path, method, operation


def parameter(spec: dict[str, Any], path: str, method: str, name: str) -> dict[str, Any]:
    found = [p for p in spec["paths"][path][method]["parameters"] if p["name"] == name]
    assert found, f"{method.upper()} {path} has no parameter {name}"
    return found[0]


class TestDocumentedStatusCodes:
    """Schemathesis' status_code_conformance: answers the API gives on purpose were missing from
    the OpenAPI document (404 on every path id, 401 and 403 from the auth dependencies, 400 for a
    body that is not JSON, 413 for one too large)."""

    async def test_every_secured_operation_documents_401(self, client):
        spec = await spec_of(client)
        missing = [
            f"{m.upper()} {p}"
            for p, m, op in operations(spec)
            if op.get("security") and "401" not in op["responses"]
        ]
        assert missing == []

    async def test_admin_operations_document_403_and_others_do_not(self, client):
        spec = await spec_of(client)
        responses = spec["paths"]["/v1/users/"]["post"]["responses"]
        assert responses["403"]["description"] == "Admin role required"
        policy = spec["paths"]["/v1/escalation/policies/{policy_id}"]
        assert "403" not in policy["get"]["responses"]  # everyone reads (a private one: 404)
        assert "team's manager" in policy["put"]["responses"]["403"]["description"]
        assert "403" not in spec["paths"]["/v1/incidents/"]["get"]["responses"]

    async def test_every_operation_with_an_id_in_its_path_documents_404(self, client):
        spec = await spec_of(client)
        missing = [
            f"{m.upper()} {p}"
            for p, m, op in operations(spec)
            if re.search(r"\{\w+_id\}", p) and "404" not in op["responses"]
        ]
        assert missing == []

    async def test_every_operation_with_a_body_documents_400_and_413(self, client):
        spec = await spec_of(client)
        missing = [
            f"{m.upper()} {p}"
            for p, m, op in operations(spec)
            if "requestBody" in op and not {"400", "413"} <= set(op["responses"])
        ]
        assert missing == []

    async def test_a_404_answer_is_the_documented_error_shape(self, admin_client):
        spec = await spec_of(admin_client)
        response = await admin_client.get("/v1/escalation/policies/987654")
        assert response.status_code == 404
        documented = spec["paths"]["/v1/escalation/policies/{policy_id}"]["get"]["responses"]
        schema = documented["404"]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/Error"}
        assert set(response.json()) == set(spec["components"]["schemas"]["Error"]["required"])

    async def test_a_body_that_is_not_text_is_a_documented_400(self, admin_client):
        response = await admin_client.post(
            "/v1/services/", content=b"\xff{\x07", headers={"content-type": "application/json"}
        )
        assert response.status_code == 400
        spec = await spec_of(admin_client)
        assert "400" in spec["paths"]["/v1/services/"]["post"]["responses"]


class TestValidationErrorShape:
    """Schemathesis' response_schema_conformance: a 422 from a domain rule (an invalid cursor, a
    NUL in a login form) carries one message, where the document allowed only a list."""

    async def test_a_422_may_be_one_message_and_the_document_says_so(self, admin_client):
        response = await admin_client.get("/v1/incidents/", params={"cursor": "0" * 40})
        assert response.status_code == 422
        assert isinstance(response.json()["detail"], str)
        spec = await spec_of(admin_client)
        detail = spec["components"]["schemas"]["HTTPValidationError"]["properties"]["detail"]
        assert {"type": "string"} in detail["anyOf"]
        assert any(kind.get("type") == "array" for kind in detail["anyOf"])


class TestMethodNotAllowed:
    """Schemathesis' allow_header_conformance: FastAPI makes one route per method, and its 405
    named only the first route's methods in `Allow` (`GET` for a path that also takes POST)."""

    @pytest.mark.parametrize(
        ("path", "allowed"),
        [
            ("/v1/users/", "GET, POST"),
            ("/v1/users", "GET, POST"),
            ("/v1/users/7", "GET, PUT, DELETE"),
            ("/v1/users/me", "GET, PUT"),  # not DELETE, which `/v1/users/{user_id}` has
            ("/v1/incidents/3/comments", "GET, POST"),
            ("/v1/schedules/1/overrides/2", "DELETE"),
        ],
    )
    async def test_allow_names_every_method_of_the_path(self, client, path, allowed):
        response = await client.request("OPTIONS", path)
        assert response.status_code == 405
        assert response.headers["allow"] == allowed


class TestSchedulesLocalTime:
    """Schemathesis' response_schema_conformance: a layer's `start` is a wall-clock time without
    an offset, but was documented as an RFC 3339 `date-time` (which needs one)."""

    async def test_layer_start_is_documented_as_local_time_text(self, admin_client, admin):
        spec = await spec_of(admin_client)
        schemas = spec["components"]["schemas"]
        for name in ("Layer", "LayerRead"):
            start = schemas[name]["properties"]["start"]
            assert "format" not in start
            assert start["type"] == "string"
        layer = {
            "user_ids": [admin.id],
            "rotation_length": 1,
            "rotation_unit": "days",
            "start": "2026-03-27T09:00:00",
        }
        body = {"name": "local time", "time_zone": "Europe/Berlin", "layers": [layer]}
        response = await admin_client.post("/v1/schedules/", json=body)
        assert response.status_code == 201, response.text
        served = response.json()["layers"][0]["start"]
        assert re.fullmatch(schemas["LayerRead"]["properties"]["start"]["pattern"], served)


class TestDateTimesAreText:
    """Schemathesis' negative_data_rejection: `at=0.5` was read as Unix time (half a second
    after 1970) where the document says an ISO 8601 `date-time`."""

    @pytest.mark.parametrize("value", ["0.5", "1700000000", "-3", "1e9"])
    async def test_a_number_is_not_a_date_time(self, admin_client, value):
        assert (await admin_client.get("/v1/oncall", params={"at": value})).status_code == 422
        answer = await admin_client.get("/v1/incidents/", params={"created_after": value})
        assert answer.status_code == 422

    async def test_iso_text_still_works(self, admin_client):
        response = await admin_client.get("/v1/oncall", params={"at": "2026-03-27T09:00:00Z"})
        assert response.status_code == 200


class TestJsonTypes:
    """Schemathesis' negative_data_rejection: `"is_active": 0` was taken for false, and
    `"repeat_delay_minutes": false` for 0 (Pydantic's lax coercions), against the schema."""

    async def test_a_number_is_not_a_boolean(self, admin_client):
        response = await admin_client.post("/v1/services/", json={"name": "a", "is_active": 0})
        assert response.status_code == 422
        webhook = {"name": "w", "url": "https://hooks.example.com/x", "events": ["triggered"]}
        response = await admin_client.post("/v1/webhooks/", json={**webhook, "enabled": 1})
        assert response.status_code == 422

    @pytest.mark.parametrize(
        "change", [{"repeat_delay_minutes": False}, {"priority": True}, {"priority": "5"}]
    )
    async def test_a_boolean_or_text_is_not_a_number(self, admin_client, admin, change):
        policy = {"name": "p", "steps": [{"targets": [{"type": "user", "id": admin.id}]}]}
        response = await admin_client.post("/v1/escalation/policies/", json={**policy, **change})
        assert response.status_code == 422, response.text
        response = await admin_client.post("/v1/escalation/policies/", json=policy)
        assert response.status_code == 201, response.text

    async def test_a_boolean_is_not_an_id_in_a_list(self, admin_client, admin):
        layer = {"user_ids": [True], "rotation_length": 1, "rotation_unit": "days"}
        layer["start"] = "2026-03-27T09:00:00"
        body = {"name": "s", "time_zone": "UTC", "layers": [layer]}
        assert (await admin_client.post("/v1/schedules/", json=body)).status_code == 422


class TestIncidentInputRules:
    """Schemathesis' positive_data_acceptance and status_code_conformance: rules the handlers
    apply were missing from the schema, so input the document allows was refused (with an
    undocumented 400 for a label filter and for an If-Match header)."""

    async def test_a_label_filter_without_a_colon_is_a_422(self, admin_client):
        response = await admin_client.get("/v1/incidents/", params={"label": "AAA"})
        assert response.status_code == 422, response.text
        spec = await spec_of(admin_client)
        label = parameter(spec, "/v1/incidents/", "get", "label")
        assert re.fullmatch(label["schema"]["items"]["pattern"], "team:payments")
        ok = await admin_client.get("/v1/incidents/", params={"label": "team:payments"})
        assert ok.status_code == 200

    async def test_if_match_must_be_a_version(self, admin_client, factory):
        incident = await factory.incident()
        path = f"/v1/incidents/{incident.id}"
        refused = await admin_client.put(path, json={"title": "x"}, headers={"If-Match": "null"})
        assert refused.status_code == 422
        spec = await spec_of(admin_client)
        pattern = parameter(spec, "/v1/incidents/{incident_id}", "put", "if-match")["schema"]
        assert not re.fullmatch(pattern["pattern"], "null")
        version = str(incident.version)
        done = await admin_client.put(path, json={"title": "x"}, headers={"If-Match": version})
        assert done.status_code == 200, done.text

    async def test_label_keys_are_documented_with_their_pattern(self, admin_client):
        spec = await spec_of(admin_client)
        labels = spec["components"]["schemas"]["IncidentCreate"]["properties"]["labels"]
        assert labels["propertyNames"]["pattern"] == r"^[A-Za-z0-9_.:/\-]+$"
        assert labels["additionalProperties"] == {"type": "string", "maxLength": 255}
        response = await admin_client.post(
            "/v1/incidents/", json={"title": "t", "labels": {"bad key": "v"}}
        )
        assert response.status_code == 422


async def test_policy_condition_label_keys_are_documented_with_their_pattern(admin_client, admin):
    """Schemathesis' positive_data_acceptance: a policy's `conditions.labels` documented any key
    with any value (Pydantic's `patternProperties`), and the API refused the keys it allowed."""
    spec = await spec_of(admin_client)
    labels = spec["components"]["schemas"]["Conditions"]["properties"]["labels"]
    assert labels["propertyNames"]["pattern"] == r"^[A-Za-z0-9_.:/\-]+$"
    assert labels["maxProperties"] == 32
    policy = {"name": "p", "steps": [{"targets": [{"type": "user", "id": admin.id}]}]}
    refused = {**policy, "conditions": {"labels": {"": {"x": []}}}}
    assert (await admin_client.post("/v1/escalation/policies/", json=refused)).status_code == 422


async def test_text_that_is_only_spaces_is_documented_as_too_short(client):
    """Schemathesis' positive_data_acceptance: request text is stripped before its length is
    checked, so `"    "` was refused for a field the document said takes 1 character or more."""
    spec = await spec_of(client)
    schemas = spec["components"]["schemas"]
    token = schemas["PasswordReset"]["properties"]["token"]
    assert not re.search(token["pattern"], "    ")
    assert re.search(token["pattern"], " t ")
    password = schemas["UserSignup"]["properties"]["password"]
    assert not re.search(password["pattern"], "       a")
    assert re.search(password["pattern"], " a long one ")
    body = {"token": "    ", "new_password": "a long passphrase"}
    assert (await client.post("/v1/auth/reset-password/", json=body)).status_code == 422


async def test_optional_query_and_header_parameters_are_never_null(client):
    """Schemathesis sent `If-Match: null`: FastAPI documented `str | None` parameters as "string
    or null", but a query or header parameter is absent or text, never null."""
    spec = await spec_of(client)
    nullable = [
        f"{m.upper()} {p} {param['name']}"
        for p, m, op in operations(spec)
        for param in op.get("parameters", [])
        if param["in"] in ("query", "header")
        and {"type": "null"} in param["schema"].get("anyOf", [])
    ]
    assert nullable == []


class TestOneOpenIncidentPerDedupKey:
    """Schemathesis' not_a_server_error (stateful phase): reopening a resolved incident while a
    newer open one has its service and dedup key broke the database's one-open-incident rule
    and answered 500; so did moving an open incident onto such a service."""

    async def test_reopen_is_a_409_naming_the_open_one(self, admin_client, factory):
        service = await factory.service()
        old = await factory.incident(service_id=service.id, dedup_key="k", status="resolved")
        new = await factory.incident(service_id=service.id, dedup_key="k")
        response = await admin_client.post(f"/v1/incidents/{old.id}/reopen", json={})
        assert response.status_code == 409, response.text
        assert f"Incident {new.id}" in response.json()["detail"]
        await admin_client.post(f"/v1/incidents/{new.id}/resolve", json={})
        response = await admin_client.post(f"/v1/incidents/{old.id}/reopen", json={})
        assert response.status_code == 200, response.text

    async def test_moving_to_a_service_with_the_same_open_key_is_a_409(self, admin_client, factory):
        first, second = await factory.service(), await factory.service()
        await factory.incident(service_id=first.id, dedup_key="k")
        moving = await factory.incident(service_id=second.id, dedup_key="k")
        path = f"/v1/incidents/{moving.id}"
        response = await admin_client.put(path, json={"service_id": first.id})
        assert response.status_code == 409, response.text
        resolved = await factory.incident(service_id=second.id, dedup_key="k", status="resolved")
        done = await admin_client.put(f"/v1/incidents/{resolved.id}", json={"service_id": first.id})
        assert done.status_code == 200, done.text


async def test_an_assignee_id_out_of_range_is_a_422(admin_client):
    """Schemathesis' status_code_conformance: 19 digits fit the documented pattern but not an
    id, and the answer was an undocumented 400."""
    response = await admin_client.get("/v1/incidents/", params={"assignee_id": "9" * 19})
    assert response.status_code == 422


async def test_spaces_around_text_do_not_count_towards_its_length(client):
    """Schemathesis' negative_data_rejection: a 128-character password with spaces around it was
    documented as too long (`maxLength` counts the spaces) yet accepted, as text is stripped."""
    spec = await spec_of(client)
    password = spec["components"]["schemas"]["UserSignup"]["properties"]["password"]
    assert "maxLength" not in password
    assert re.fullmatch(password["pattern"], "  " + "a" * 128 + "  ")
    assert not re.fullmatch(password["pattern"], "a" * 129)
    body = {"email": "pad@example.com", "full_name": "Pad", "password": "  " + "a" * 128 + "  "}
    assert (await client.post("/v1/auth/signup", json=body)).status_code == 201
    body = {"email": "long@example.com", "full_name": "Long", "password": "a" * 129}
    assert (await client.post("/v1/auth/signup", json=body)).status_code == 422
