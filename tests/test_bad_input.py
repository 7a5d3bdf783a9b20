"""No client input makes any endpoint answer 500.

The operations come from the app's own OpenAPI document and the bad input from each operation's
own schemas, so an endpoint added later is covered without touching this file. Every problem is
collected and reported in one assertion, so a single run shows all of them.
"""

from __future__ import annotations

import base64
import copy
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus

import httpx

HTTP_METHODS = ("get", "put", "post", "patch", "delete", "options", "head", "trace")
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"
HUGE = 1_000_000
UNICODE = "ünïcødé ☃ 𝄞 中文 \u202e"
SENTINEL = "__bad_input_sentinel__"
EXCERPT = 240

# Error bodies the API contract documents without a "detail" key (PagerDuty's own error shape).
OTHER_ERROR_SHAPES = {"/v2/enqueue": {"status", "message", "errors"}}
# Pages for people, not API clients (a page email's one-click links): errors are HTML pages.
HTML_ERRORS = {"/v1/actions/{token}"}


def deep_lists(depth: int) -> str:
    # Built as text: json.dumps of a nested object this deep would recurse past Python's limit.
    return "[" * depth + "]" * depth


def deep_objects(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def b64(raw: bytes | str) -> str:
    data = raw.encode() if isinstance(raw, str) else raw
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


# Raw JSON values (not Python ones) so that NaN, 1e400 and lone surrogates survive the encoding.
WRONG_TYPES = [
    ("garbage string", json.dumps(f"garbage {UNICODE}")),
    ("int 123", "123"),
    ("float 1.5", "1.5"),
    ("true", "true"),
    ("null", "null"),
    ("empty object", "{}"),
    ("empty list", "[]"),
    ("nested object", '{"nested": {"deep": [1, "x", null]}}'),
    ("mixed list", '[1, "two", null, {}]'),
    ("NaN", "NaN"),
    ("1e400 (infinity)", "1e400"),
]
STRING_VALUES = [
    ("empty string", '""'),
    ("blank string", '"   "'),
    ("string with NUL", '"a\\u0000b"'),
    ("lone surrogate", '"\\ud800"'),
    (f"{HUGE:,}-char string", '"' + "x" * HUGE + '"'),
]
NUMBER_VALUES = [
    ("0", "0"),
    ("-1", "-1"),
    ("2**63", str(2**63)),
    ("-(2**63)-1", str(-(2**63) - 1)),
    ("10**30", str(10**30)),
    ("1e308", "1e308"),
    ("-1e308", "-1e308"),
]
DATE_VALUES = [
    ("year 9999 at -14:00", '"9999-12-31T23:59:59-14:00"'),
    ("year 1 at +14:00", '"0001-01-01T00:00:00+14:00"'),
    ("impossible date", '"2026-02-30T25:61:00Z"'),
]
PATH_VALUES = [
    ("non-numeric", "not-a-number"),
    ("negative", "-1"),
    ("zero", "0"),
    ("float", "1.5"),
    ("2**64", str(2**64)),
    ("10**30", str(10**30)),
    ("10,000 chars", "9" * 10_000),
    ("unicode", UNICODE),
    ("%00", "%00"),
    ("invalid UTF-8 escape", "%ff"),
]
QUERY_VALUES: list[tuple[str, str | list[str]]] = [
    ("empty", ""),
    ("non-numeric", "not-a-number"),
    ("-1", "-1"),
    ("0", "0"),
    ("2**64", str(2**64)),
    ("10**30", str(10**30)),
    ("1e308", "1e308"),
    ("NaN", "NaN"),
    ("inf", "inf"),
    ("true", "true"),
    ("unicode", UNICODE),
    ("NUL byte", "a\x00b"),
    ("separator only", ":"),
    # httpx refuses URLs over 64 KiB (as servers do), so this is as huge as a query gets.
    ("60,000 chars", "x" * 60_000),
    ("year 9999 at -14:00", "9999-12-31T23:59:59-14:00"),
    ("year 1 at +14:00", "0001-01-01T00:00:00+14:00"),
    ("impossible date", "2026-02-30T25:61:00Z"),
    ("repeated, mixed types", ["1", "two", ""]),
]
CURSOR_VALUES = [
    ("not base64", "!!!not-a-cursor!!!"),
    ("base64 of bytes", b64(b"\xff\xfe\x00")),
    ("base64 of []", b64("[]")),
    ("base64 of {}", b64("{}")),
    ("base64 of null", b64("null")),
    ("base64 of 200 nested lists", b64(deep_lists(200))),
]
# What each key of a real cursor is swapped for.
CURSOR_KEY_VALUES: list[Any] = [
    10**30,
    2**63,
    -(2**63) - 1,
    1.5,
    1e308,
    "x",
    "a\x00b",
    "9999-12-31T23:59:59-14:00",
    None,
    True,
    [],
    {},
]


def body_battery(example: str | None) -> list[tuple[str, bytes, str | None]]:
    """Bodies sent to every operation, with or without a documented body."""
    bodies: list[tuple[str, bytes, str | None]] = [
        ("malformed JSON", b"{not json", JSON),
        ("JSON []", b"[]", JSON),
        ("JSON null", b"null", JSON),
        ('JSON "string"', b'"string"', JSON),
        ("JSON 123", b"123", JSON),
        ("JSON NaN", b"NaN", JSON),
        ("JSON {}", b"{}", JSON),
        ("empty body", b"", JSON),
        ("invalid UTF-8", b'{"a": "\xff\xfe"}', JSON),
        ("5,000 nested lists", deep_lists(5000).encode(), JSON),
        ("5,000 nested objects", deep_objects(5000).encode(), JSON),
        (f"{HUGE:,} bytes of NUL", b"\x00" * HUGE, JSON),
        ("form body", b"a=1&b=%ff", FORM),
        ("text/plain body", b"hello", "text/plain"),
        ("multipart without boundary", b"--x\r\n", MULTIPART),
        (
            "malformed multipart",
            b"--b\r\nContent-Disposition: form-data\r\n\r\n",
            MULTIPART + "; boundary=b",
        ),
    ]
    if example is not None:
        bodies.append(("example body without content-type", example.encode(), None))
    return bodies


class Spec:
    """Just enough of OpenAPI 3.1 to build inputs: $ref, allOf/anyOf/oneOf, types, examples."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        seen = 0
        while "$ref" in schema and seen < 50:
            target: Any = self.document
            for part in schema["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
            seen += 1
        if "allOf" in schema:
            merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
            for part in schema["allOf"]:
                part = self.resolve(part)
                merged.setdefault("properties", {}).update(part.get("properties", {}))
                merged["required"] = [*merged.get("required", []), *part.get("required", [])]
                for key, value in part.items():
                    merged.setdefault(key, value)
            schema = merged
        return schema

    def options(self, schema: dict[str, Any]) -> list[dict[str, Any]]:
        schema = self.resolve(schema)
        alternatives = schema.get("anyOf") or schema.get("oneOf")
        if not alternatives:
            return [schema]
        return [option for part in alternatives for option in self.options(part)]

    def types(self, schema: dict[str, Any]) -> set[str]:
        found: set[str] = set()
        for option in self.options(schema):
            kind = option.get("type")
            if isinstance(kind, list):
                found.update(kind)
            elif kind:
                found.add(kind)
            elif "properties" in option:
                found.add("object")
            elif "enum" in option:
                found.update(type_name(value) for value in option["enum"])
        return found

    def formats(self, schema: dict[str, Any]) -> set[str]:
        return {o["format"] for o in self.options(schema) if "format" in o}

    def sample(self, schema: dict[str, Any], depth: int = 0) -> Any:
        schema = self.resolve(schema)
        for key in ("examples", "example", "default", "const", "enum"):
            if key in schema and schema[key] is not None:
                value = schema[key]
                return value[0] if key in ("examples", "enum") and value else value
        options = [o for o in self.options(schema) if o.get("type") != "null"]
        if not options:
            return None
        option = options[0]
        if option is not schema:
            return self.sample(option, depth + 1)
        kind = option.get("type", "object" if "properties" in option else "string")
        if kind == "string":
            return {
                "date-time": "2026-01-05T09:00:00Z",
                "date": "2026-01-05",
                "email": "someone@example.com",
                "uri": "https://example.com/x",
                "uuid": "00000000-0000-4000-8000-000000000000",
            }.get(option.get("format", ""), "sample")
        if kind in ("integer", "number"):
            return max(1, option.get("minimum", 1))
        if kind == "boolean":
            return True
        if kind == "array":
            return [self.sample(option.get("items", {}), depth + 1)] if depth < 8 else []
        if kind == "object" and depth < 8:
            props = option.get("properties", {})
            return {
                name: self.sample(props[name], depth + 1) for name in option.get("required", [])
            }
        return {}

    def fields(
        self, schema: dict[str, Any], instance: Any, path: tuple[Any, ...] = ()
    ) -> Iterator[tuple[tuple[Any, ...], dict[str, Any]]]:
        """Every place in `instance` and every documented property of its objects, with schema."""
        if len(path) > 8:
            return
        options = self.options(schema)
        if isinstance(instance, dict):
            obj = next((o for o in options if "properties" in o or o.get("type") == "object"), {})
            props = obj.get("properties", {})
            extra = obj.get("additionalProperties")
            names = list(props) + [name for name in instance if name not in props]
            for name in names:
                sub = props.get(name, extra if isinstance(extra, dict) else {})
                yield (*path, name), sub
                if isinstance(instance.get(name), dict | list):
                    yield from self.fields(sub, instance[name], (*path, name))
        elif isinstance(instance, list) and instance:
            array = next((o for o in options if o.get("type") == "array"), {})
            sub = array.get("items", {})
            yield (*path, 0), sub
            if isinstance(instance[0], dict | list):
                yield from self.fields(sub, instance[0], (*path, 0))

    def objects(self, instance: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
        if isinstance(instance, dict):
            yield path
            for name, value in instance.items():
                yield from self.objects(value, (*path, name))
        elif isinstance(instance, list) and instance:
            yield from self.objects(instance[0], (*path, 0))


def type_name(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string"}.get(
        type(value), "null"
    )


def with_raw(instance: Any, path: tuple[Any, ...], raw: str) -> str:
    """`instance` as JSON text with the value at `path` replaced by the raw JSON text `raw`."""
    if not path:
        return raw
    changed = copy.deepcopy(instance)
    parent = changed
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = SENTINEL
    return json.dumps(changed).replace(json.dumps(SENTINEL), raw, 1)


def field_values(spec: Spec, schema: dict[str, Any], deep: int) -> list[tuple[str, str]]:
    kinds = spec.types(schema)
    values = [*WRONG_TYPES, (f"{deep} nested lists", deep_lists(deep))]
    if "string" in kinds or not kinds:
        values += STRING_VALUES
    if kinds & {"integer", "number"}:
        values += NUMBER_VALUES
    if spec.formats(schema) & {"date-time", "date", "time"}:
        values += DATE_VALUES
    for option in spec.options(schema):
        if option.get("type") == "array":
            item = spec.sample(option.get("items", {}))
            if isinstance(item, int) and not isinstance(item, bool):
                many: list[Any] = list(range(1, 40_001))
            elif isinstance(item, str):
                many = [f"{item}{i}" for i in range(40_000)]
            else:
                many = [item] * 1_000
            values.append((f"list of {len(many):,} items", json.dumps(many)))
        extra = option.get("additionalProperties")
        if option.get("type") == "object" and isinstance(extra, dict):
            value = spec.sample(extra)
            values.append(("10,000 keys", json.dumps({f"k{i}": value for i in range(10_000)})))
            values.append(("odd keys", json.dumps({"": value, "a\x00b": value, UNICODE: value})))
    return values


@dataclass
class Operation:
    method: str
    path: str
    spec: dict[str, Any]

    @property
    def name(self) -> str:
        return f"{self.method.upper()} {self.path}"

    def params(self, where: str) -> list[dict[str, Any]]:
        return [p for p in self.spec.get("parameters", []) if p.get("in") == where]

    def body(self) -> tuple[str, dict[str, Any], Any] | None:
        """(content type, schema, example) of the documented request body."""
        content = self.spec.get("requestBody", {}).get("content", {})
        for media in (JSON, FORM, MULTIPART):
            if media in content:
                entry = content[media]
                example = entry.get("example")
                if example is None and entry.get("examples"):
                    example = next(iter(entry["examples"].values())).get("value")
                return media, entry.get("schema", {}), example
        return None


def excerpt(text: str) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= EXCERPT else text[:EXCERPT] + f"… ({len(text):,} chars)"


class Battery:
    def __init__(self, client: httpx.AsyncClient, document: dict[str, Any]) -> None:
        self.client = client
        self.spec = Spec(document)
        self.failures: dict[str, None] = {}  # ordered, and bisection repeats some depths
        self.exercised: set[tuple[str, str]] = set()
        self.seeds: dict[str, str] = {}
        self.counter = 0
        self.operations = [
            Operation(method, path, item[method])
            for path, item in document["paths"].items()
            for method in HTTP_METHODS
            if method in item
        ]

    def example(self, op: Operation) -> tuple[str, dict[str, Any], Any] | None:
        body = op.body()
        if body is None:
            return None
        media, schema, example = body
        return media, schema, example if example is not None else self.spec.sample(schema)

    async def send(
        self,
        op: Operation,
        what: str,
        *,
        path_values: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
        content: bytes | None = None,
        content_type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response | None:
        self.exercised.add((op.method.upper(), op.path))
        url = op.path
        for param in op.params("path"):
            value = (path_values or {}).get(param["name"]) or self.seed_for(op, param)
            url = url.replace("{" + param["name"] + "}", value)
        query = {
            p["name"]: self.spec.sample(p.get("schema", {}))
            for p in op.params("query")
            if p.get("required")
        }
        query.update(params or {})
        sent_headers = dict(headers or {})
        if content is None and (example := self.example(op)):
            # Only the input under test is bad: everything else the operation needs is valid.
            media, _, value = example
            content = encode(media, value)
            content_type = media
        if content_type:
            sent_headers["content-type"] = content_type
        try:
            request = self.client.build_request(
                op.method.upper(), url, params=query, content=content, headers=sent_headers
            )
        except Exception as exc:
            self.fail(op, what, f"the test could not build this request: {exc!r}")
            return None
        try:
            response = await self.client.send(request)
        except Exception as exc:  # the app raised instead of answering: a 500 to a real client
            self.fail(op, what, f"500, unhandled {type(exc).__name__}: {excerpt(str(exc))}")
            return None
        problem = judge(op, response)
        if problem:
            self.fail(op, what, problem)
        return response

    def fail(self, op: Operation, what: str, problem: str) -> None:
        self.failures[f"{op.name} [{what}]: {problem}"] = None

    def seed_for(self, op: Operation, param: dict[str, Any]) -> str:
        key = op.path[: op.path.index("{" + param["name"] + "}")]
        return self.seeds.get(key) or str(self.spec.sample(param.get("schema", {})))

    async def seed(self) -> None:
        """A real resource behind every path parameter, so path ids reach the body's validation.

        Each collection gets its documented example POSTed once; the answer's id is the seed.
        """
        by_path = {(op.method, op.path): op for op in self.operations}
        for op in self.operations:
            for param in op.params("path"):
                key = op.path[: op.path.index("{" + param["name"] + "}")]
                if key in self.seeds:
                    continue
                creator = by_path.get(("post", key)) or by_path.get(("post", key.rstrip("/")))
                if creator is None or self.example(creator) is None:
                    continue
                response = await self.send(creator, "documented example, to seed ids")
                if response is not None and response.status_code < 300:
                    created = response.json()
                    if isinstance(created, dict) and "id" in created:
                        self.seeds[key] = str(created["id"])

    async def run(self) -> None:
        await self.seed()
        # Deletions last and children before parents, so every other operation meets live seeds.
        ordered = sorted(
            self.operations, key=lambda op: (op.method == "delete", -op.path.count("/"))
        )
        for op in ordered:
            await self.bodies(op)
            await self.path_params(op)
            await self.query_params(op)
            await self.header_params(op)
            body = self.example(op)
            if body and body[0] == JSON:
                await self.json_fields(op, body[1], body[2])
            elif body:
                await self.form_fields(op, body[1], body[2])

    async def bodies(self, op: Operation) -> None:
        example = self.example(op)
        text = json.dumps(example[2]) if example and example[0] == JSON else None
        for what, content, content_type in body_battery(text):
            await self.send(op, what, content=content, content_type=content_type)

    async def path_params(self, op: Operation) -> None:
        for param in op.params("path"):
            for what, value in PATH_VALUES:
                name = param["name"]
                await self.send(op, f"path {name}={what}", path_values={name: value})

    async def query_params(self, op: Operation) -> None:
        for param in op.params("query"):
            name = param["name"]
            for what, value in QUERY_VALUES:
                await self.send(op, f"query {name}={what}", params={name: value})
            if name == "cursor":
                for what, value in [*CURSOR_VALUES, *await self.tampered_cursors(op)]:
                    await self.send(op, f"query cursor={what}", params={name: value})

    async def header_params(self, op: Operation) -> None:
        for param in op.params("header"):
            name = param["name"]
            for what, value in QUERY_VALUES:
                # httpx refuses what cannot be a header at all; a server never sees that.
                if isinstance(value, str) and value.isascii() and value.isprintable():
                    await self.send(op, f"header {name}={what}", headers={name: value})

    async def tampered_cursors(self, op: Operation) -> list[tuple[str, str]]:
        """A real cursor of this list with each of its keys swapped for hostile values."""
        cursor = None
        for _ in range(3):
            response = await self.send(op, "limit=1, to get a real cursor", params={"limit": 1})
            page = response.json() if response is not None and response.status_code == 200 else {}
            cursor = page.get("next_cursor") if isinstance(page, dict) else None
            creator = next(
                (o for o in self.operations if (o.method, o.path) == ("post", op.path)), None
            )
            if cursor or creator is None:
                break
            await self.send(creator, "documented example, to fill a list")
        if not cursor:
            return []
        try:
            values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        except ValueError:
            return []
        if not isinstance(values, dict):
            return []
        tampered = []
        for key in values:
            for value in CURSOR_KEY_VALUES:
                raw = json.dumps({**values, key: value})
                tampered.append((f"real cursor with {key}={value!r}", b64(raw)))
            rest = {k: v for k, v in values.items() if k != key}
            tampered.append((f"real cursor without {key}", b64(json.dumps(rest))))
        tampered.append(("real cursor plus a key", b64(json.dumps({**values, "zz": 1}))))
        return tampered

    async def parse_limit(self, op: Operation) -> int | None:
        """The shallowest nesting the app's JSON parser refuses (a 400), found by bisection."""

        async def refused(depth: int) -> bool:
            content = deep_lists(depth).encode()
            response = await self.send(
                op, f"{depth} nested lists", content=content, content_type=JSON
            )
            return response is not None and response.status_code == 400

        low, high = 1, 5000
        if not await refused(high):
            return None
        while high - low > 1:
            middle = (low + high) // 2
            if await refused(middle):
                high = middle
            else:
                low = middle
        return high

    async def json_fields(self, op: Operation, schema: dict[str, Any], example: Any) -> None:
        limit = await self.parse_limit(op)
        if limit:
            # Just below the parser's limit the body parses, but answering it needs a few more
            # stack frames (the 422 echoes the input back): the depths where a 500 would hide.
            for depth in range(max(1, limit - 12), limit):
                content = deep_lists(depth).encode()
                await self.send(op, f"{depth} nested lists", content=content, content_type=JSON)
        deep = max(1, limit - 30) if limit else 500
        for path in self.spec.objects(example):
            what = "unknown field" + (f" in {'.'.join(map(str, path))}" if path else "")
            await self.send_json(op, what, with_raw(example, (*path, "unexpected_field"), '"x"'))
        for path, field_schema in self.spec.fields(schema, example):
            where = ".".join(map(str, path))
            for what, raw in field_values(self.spec, field_schema, deep):
                await self.send_json(
                    op, f"{where}={what}", with_raw(self.fresh(schema, example), path, raw)
                )

    def fresh(self, schema: dict[str, Any], example: Any) -> Any:
        """The example with new emails and names, so that a variant the app accepts does not turn
        every later one into a 409 before it reaches the database."""
        self.counter += 1
        changed = copy.deepcopy(example)
        for path, field_schema in self.spec.fields(schema, example):
            parent = changed
            for key in path[:-1]:
                parent = parent[key]
            value = parent.get(path[-1]) if isinstance(parent, dict) else None
            if not isinstance(value, str):
                continue
            if "email" in self.spec.formats(field_schema) and "@" in value:
                local, domain = value.split("@", 1)
                parent[path[-1]] = f"{local}+{self.counter}@{domain}"
            elif path[-1] == "name":
                parent[path[-1]] = f"{value} {self.counter}"
        return changed

    async def send_json(self, op: Operation, what: str, text: str) -> None:
        await self.send(op, what, content=text.encode(), content_type=JSON)

    async def form_fields(self, op: Operation, schema: dict[str, Any], example: Any) -> None:
        base = {k: str(v) for k, v in (example or {}).items()}
        resolved = self.spec.resolve(schema)
        names = list(resolved.get("properties", {})) or list(base)
        garbage = [
            (f"{HUGE:,} chars", "x" * HUGE),
            ("NUL byte", "%00"),
            ("invalid UTF-8", "%ff%fe"),
        ]
        for name in names:
            for what, value in garbage:
                await self.send_form(op, f"form {name}={what}", {**base, name: value})
            if name not in resolved.get("required", []):
                # Login verifies a password hash on every request (~70 ms); the optional OAuth2
                # fields get the three variants most likely to break something, not all six.
                continue
            await self.send_form(op, f"form {name}=unicode", {**base, name: UNICODE})
            await self.send_form(op, f"form {name}=empty", {**base, name: ""})
            rest = {k: v for k, v in base.items() if k != name}
            await self.send_form(op, f"form {name} missing", rest)
            await self.send_form(op, f"form {name} repeated", base, extra=f"&{name}=again")
        await self.send_form(op, "form unknown field", {**base, "unexpected_field": "x"})
        await self.send_form(op, "form with 5,000 fields", base, extra="&f=1" * 5000)
        for what, raw in [
            ("form of separators", b"%%%&&&==="),
            ("form of bare = and &", b"=&=&="),
            ("form of invalid bytes", b"\xff\xfe\x00"),
            (f"form key of {HUGE:,} chars", b"k" * HUGE),
        ]:
            await self.send(op, what, content=raw, content_type=FORM)

    async def send_form(
        self, op: Operation, what: str, values: dict[str, str], extra: str = ""
    ) -> None:
        # Values that look percent-encoded go as they are, so that %00 and %ff reach the parser.
        encoded = "&".join(
            f"{quote_plus(k)}={v if v.startswith('%') else quote_plus(v)}"
            for k, v in values.items()
        )
        await self.send(op, what, content=(encoded + extra).encode(), content_type=FORM)


def encode(media: str, value: Any) -> bytes:
    if media == JSON:
        return json.dumps(value).encode()
    return "&".join(
        f"{quote_plus(k)}={quote_plus(str(v))}" for k, v in (value or {}).items()
    ).encode()


def judge(op: Operation, response: httpx.Response) -> str | None:
    status = response.status_code
    if status < 400:
        return None
    if status >= 500:
        return f"{status} {excerpt(response.text)}"
    if op.path in HTML_ERRORS and response.headers.get("content-type", "").startswith("text/html"):
        # The page's own refusal; what the app refuses before any route (a NUL in the path, a
        # body nested too deep) is the usual JSON error, checked below.
        return None if "<html" in response.text else f"{status} HTML without a page"
    try:
        body = response.json()
    except RecursionError:
        # The test's own parser gave up on an echoed deep input; the body is still JSON.
        return None if response.text.startswith('{"detail"') else f"{status} not JSON"
    except ValueError:
        return f"{status} not JSON: {excerpt(response.text)}"
    if isinstance(body, dict) and "detail" in body:
        return None
    shape = OTHER_ERROR_SHAPES.get(op.path)
    if shape and isinstance(body, dict) and shape <= body.keys():
        return None
    return f"{status} without a detail key: {excerpt(response.text)}"


async def test_no_input_makes_any_endpoint_answer_500(admin_client, harness, caplog):
    # Each 500 is reported below, one line each; the app's tracebacks would bury that report.
    caplog.set_level(logging.CRITICAL, logger="app.core.errors")
    document = harness.app.openapi()
    battery = Battery(admin_client, document)
    await battery.run()

    me = await admin_client.get("/v1/users/me")
    if me.status_code != 200:
        # Had the admin lost its session, most requests above stopped at a 401.
        battery.failures[f"admin session lost: GET /v1/users/me answered {me.status_code}"] = None
    documented = {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }
    for method, path in sorted(documented - battery.exercised):
        battery.failures[f"{method} {path} was never exercised"] = None
    count = len(battery.failures)
    assert count == 0, f"{count} bad answers:\n" + "\n".join(battery.failures)
    assert battery.exercised == documented


async def test_both_slash_forms_answer(admin_client, client):
    for path in ("/v1/users", "/v1/users/", "/v1/users/me", "/v1/users/me/", "/health", "/health/"):
        response = await admin_client.get(path)
        assert response.status_code == 200, (path, response.status_code, response.text)

    for n, path in enumerate(("/v1/auth/signup/", "/v1/auth/signup")):
        body = {"email": f"slash{n}@example.com", "password": "a long passphrase", "full_name": "S"}
        response = await client.post(path, json=body)
        assert response.status_code == 201, (path, response.status_code, response.text)

    # Declared with the slash; answering without it proves the alias works in that direction too.
    body = {"token": "not-a-real-token", "new_password": "a long passphrase"}
    for path in ("/v1/auth/reset-password/", "/v1/auth/reset-password"):
        response = await client.post(path, json=body)
        assert response.status_code == 400, (path, response.status_code, response.text)
