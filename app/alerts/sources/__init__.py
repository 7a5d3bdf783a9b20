"""The registry of alert sources: every module in this package that declares a `SOURCE`.

Adding a source is one module here (plus its tests): its endpoint, its integration kind, its
place on the console's services page and in the OpenAPI document follow from its `SOURCE`.
"""

from __future__ import annotations

import importlib
import pkgutil

from app.alerts.source import Source


def _discover() -> dict[str, Source]:
    found: dict[str, Source] = {}
    for module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        source = getattr(importlib.import_module(f"{__name__}.{module.name}"), "SOURCE", None)
        if isinstance(source, Source):
            if source.kind in found:
                raise RuntimeError(f"two alert sources declare the kind {source.kind!r}")
            found[source.kind] = source
    return found


SOURCES: dict[str, Source] = _discover()
KINDS: tuple[str, ...] = tuple(SOURCES)


def source(kind: str) -> Source:
    return SOURCES[kind]
