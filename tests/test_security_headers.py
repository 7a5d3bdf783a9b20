"""Security headers on every answer; CORS closed unless configured; Host checked when configured."""

from __future__ import annotations

from contextlib import asynccontextmanager

import httpx

from app.main import create_app
from tests.support.settings import make_settings

HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
}


@asynccontextmanager
async def client_for(database_url, base_url="http://test", **settings):
    app = create_app(make_settings(database_url, **settings))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=base_url
    ) as client:  # fmt: skip
        yield client


def assert_secured(response):
    for name, value in HEADERS.items():
        assert response.headers.get(name) == value, (response.request.url, name)
    assert response.headers["cache-control"] == "no-store"


async def test_every_kind_of_answer_carries_the_headers(client, admin_client):
    answers = [
        await client.get("/health"),  # 200
        await client.get("/v1/nowhere"),  # 404
        await client.get("/v1/users/me"),  # 401
        await admin_client.post("/v1/services/", json={"name": ""}),  # 422
        await client.post("/v1/alerts/generic", content=b"x" * 70_000,
                          headers={"Content-Type": "application/json"}),  # 413, before routing
    ]  # fmt: skip
    assert [a.status_code for a in answers] == [200, 404, 401, 422, 413]
    for answer in answers:
        assert_secured(answer)
    assert "strict-transport-security" not in answers[0].headers  # plain http here


async def test_the_docs_page_gets_a_policy_that_lets_it_load(client):
    docs = await client.get("/docs")
    assert docs.status_code == 200
    policy = docs.headers["content-security-policy"]
    assert "script-src 'self' 'sha256-" in policy  # its own files, and its one inline script
    assert "https:" not in policy  # no CDN: tests/test_api_docs.py
    assert "frame-ancestors 'none'" in policy and "cache-control" not in docs.headers


async def test_cross_origin_calls_are_refused_by_default(client):
    preflight = await client.options("/v1/incidents/", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})  # fmt: skip
    assert "access-control-allow-origin" not in preflight.headers
    simple = await client.get("/health", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in simple.headers


async def test_configured_origins_are_allowed_and_no_others(database_url):
    async with client_for(database_url, cors_allow_origins="https://ops.example.com/") as client:
        allowed = await client.options("/v1/incidents/", headers={
            "Origin": "https://ops.example.com", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type"})  # fmt: skip
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://ops.example.com"
        assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
        other = await client.options("/v1/incidents/", headers={
            "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})  # fmt: skip
        assert other.status_code == 400
        assert "access-control-allow-origin" not in other.headers
        assert_secured(other)


async def test_trusted_hosts_refuse_other_host_headers(database_url):
    settings = {"trusted_hosts": "api.example.com, *.internal.example"}
    async with client_for(database_url, "http://evil.example", **settings) as client:
        refused = await client.get("/health")
        assert refused.status_code == 400
        assert_secured(refused)
    async with client_for(database_url, "http://api.example.com", **settings) as client:
        assert (await client.get("/health")).status_code == 200
    async with client_for(database_url, "http://ims.internal.example", **settings) as client:
        assert (await client.get("/health")).status_code == 200


async def test_https_deployments_get_strict_transport_security(database_url):
    async with client_for(database_url, public_base_url="https://oncall.example.com") as client:
        answer = await client.get("/health")
    assert answer.headers["strict-transport-security"] == "max-age=31536000; includeSubDomains"
