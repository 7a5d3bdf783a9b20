"""/docs (Swagger UI) and /redoc (ReDoc) load nothing from another host: their files are served
by the app (Swagger UI from the pinned swagger-ui-bundle-v2, ReDoc from app/vendor/), and their
Content-Security-Policy names this origin only. The browser check, with every other host
unreachable, is in tests/ui/test_browser.py."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest

from app.openapi import ASSETS, REDOC, SWAGGER_UI

PAGES = ("/docs", "/redoc", "/docs/oauth2-redirect")
# src="…" and href="…" in a page, and the URL Swagger UI is given for the document.
REFERENCE = re.compile(r'\b(?:src|href|spec-url)="([^"]*)"')
SWAGGER_URL = re.compile(r"url: '([^']*)'")
TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


def references(html: str) -> list[str]:
    return REFERENCE.findall(html) + SWAGGER_URL.findall(html)


@pytest.mark.parametrize("path", PAGES)
async def test_the_pages_reference_local_urls_only(client, path):
    page = await client.get(path)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    found = references(page.text)
    non_local = [url for url in found if not url.startswith("/") or url.startswith("//")]
    assert non_local == [], f"{path} references other hosts: {non_local}"
    assert "http://" not in page.text and "https://" not in page.text


async def test_the_docs_pages_name_their_assets_and_the_document(client):
    docs = references((await client.get("/docs")).text)
    redoc = references((await client.get("/redoc")).text)
    version = SWAGGER_UI.name  # swagger-ui-<version>, from the pinned package
    assert f"/docs/assets/{version}/swagger-ui-bundle.js" in docs
    assert f"/docs/assets/{version}/swagger-ui.css" in docs
    assert f"/docs/assets/{REDOC.name}/redoc.standalone.js" in redoc
    assert "/v1/openapi.json" in docs and "/v1/openapi.json" in redoc


async def test_every_referenced_asset_is_served_with_its_type(client):
    urls = set()
    for path in PAGES:
        urls.update(u for u in references((await client.get(path)).text) if "/assets/" in u)
    assert len(urls) == 4  # Swagger UI's script, style and icon; ReDoc's script
    for url in sorted(urls):
        answer = await client.get(url)
        assert answer.status_code == 200, url
        expected = TYPES[url[url.rindex(".") :]]
        assert answer.headers["content-type"].split(";")[0] == expected, url
        assert answer.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert len(answer.content) > 500, url
    # Whole files: the start of each bundle is what its package ships.
    swagger_js = await client.get(f"/docs/assets/{SWAGGER_UI.name}/swagger-ui-bundle.js")
    assert b"SwaggerUIBundle" in swagger_js.content[:1000]
    redoc_js = await client.get(f"/docs/assets/{REDOC.name}/redoc.standalone.js")
    assert redoc_js.content == (REDOC / "redoc.standalone.js").read_bytes()


@pytest.mark.parametrize(
    "path",
    [
        "/docs/assets/nothing.js",
        f"/docs/assets/{SWAGGER_UI.name}/index.html",  # in the package, not served
        f"/docs/assets/{SWAGGER_UI.name}/../../__init__.py",
        f"/docs/assets/{REDOC.name}/README.md",
    ],
)
async def test_only_the_listed_files_are_served(client, path):
    assert (await client.get(path)).status_code == 404


def test_the_vendored_redoc_notes_its_version_and_licence():
    version = REDOC.name.removeprefix("redoc-")
    notes = (REDOC / "README.md").read_text()
    assert f"redoc@{version}" in notes
    digest = hashlib.sha256((REDOC / "redoc.standalone.js").read_bytes()).hexdigest()
    assert digest in notes, "README.md's sha256 of redoc.standalone.js is out of date"
    assert (REDOC / "LICENSE").read_text().startswith("The MIT License")
    assert all(path.is_file() for path, _ in ASSETS.values())


def digest(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


@pytest.mark.parametrize("path", [*PAGES, f"/docs/assets/{REDOC.name}/redoc.standalone.js"])
async def test_the_policy_names_no_other_host(client, path):
    policy = (await client.get(path)).headers["content-security-policy"]
    sources = {word for directive in policy.split(";") for word in directive.split()[1:]}
    allowed = {"'self'", "'none'", "data:", "blob:", "'unsafe-inline'"}
    assert {s for s in sources if not s.startswith("'sha256-")} <= allowed, policy
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy


async def test_swagger_ui_runs_its_own_inline_script_only(client):
    page = await client.get("/docs")
    policy = page.headers["content-security-policy"]
    inline = re.findall(r"<script>(.*?)</script>", page.text, re.DOTALL)
    assert len(inline) == 1
    script_src = next(d for d in policy.split(";") if d.strip().startswith("script-src"))
    assert script_src.split()[1:] == ["'self'", digest(inline[0])]
    assert "'unsafe-inline'" not in policy and "worker-src" not in policy


async def test_redoc_may_style_inline_and_start_its_search_worker_but_runs_no_inline_script(
    client,
):
    policy = (await client.get("/redoc")).headers["content-security-policy"]
    directives = {d.split()[0]: d.split()[1:] for d in policy.split(";") if d.strip()}
    assert directives["script-src"] == ["'self'"]
    assert directives["style-src"] == ["'self'", "'unsafe-inline'"]
    assert directives["worker-src"] == ["blob:"]
