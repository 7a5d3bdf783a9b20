"""The server's CPU under a benchmark, sampled by py-spy, and where it goes.

`python -m bench run --profile DIR` (or `--profile DIR` to scripts/bench_ingest.py and
scripts/bench_list.py) records each measured run's server processes with `py-spy record
--subprocesses --format raw` into DIR (collapsed stacks, one line a distinct stack with its
sample count: speedscope and flamegraph.pl read them); keep DIR out of the repository. A
profiled run's own figures cost py-spy's sampling too: compare unprofiled runs only.

`python -m bench budget FILE…` prints the share of the samples in each part of a request
(`PARTS`), by the innermost frame of each sample: a sample is charged to the code that was
running, not to its callers. SQLAlchemy's asyncpg adapter runs each statement in a greenlet,
whose stack py-spy shows cut from the request's, so charging callers would be wrong anyway.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.processes import BIN

RATE = 200  # samples a second

# (part, patterns of the innermost frame's file): the first match wins, so the more particular
# come first. The names are those of docs/performance.md's per-request budget.
PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("logging", ("logging/", "pythonjsonlogger/", "app/core/logging.py", "uvicorn/logging.py")),
    ("metrics", ("prometheus_client/", "app/core/metrics.py")),
    ("serialisation", ("json/", "app/core/schemas.py", "pydantic_core", "fastapi/encoders.py")),
    ("validation", ("pydantic/", "fastapi/dependencies/", "fastapi/_compat/", "fastapi/params.py",
                    "annotated_types/", "typing.py")),
    ("SQL building", ("sqlalchemy/sql/", "sqlalchemy/orm/", "sqlalchemy/util/langhelpers.py")),
    ("driver", ("asyncpg/", "sqlalchemy/dialects/", "sqlalchemy/engine/", "sqlalchemy/pool/",
                "sqlalchemy/ext/asyncio/", "sqlalchemy/util/", "greenlet")),
    ("HTTP", ("uvicorn/", "httptools", "h11/", "starlette/", "fastapi/", "app/core/observe.py",
              "app/core/security_headers.py", "app/core/timing.py", "app/core/body_guard.py",
              "app/core/routing.py", "anyio/", "gunicorn/")),
    ("authentication", ("jwt/", "cryptography/", "app/auth/")),
    ("application", ("app/",)),
    ("event loop", ("asyncio/", "uvloop", "selectors.py", "contextvars", "runners.py")),
)  # fmt: skip
_FILE = re.compile(r"\(([^()]*?)(?::\d+)?\)$")


@contextmanager
def recorded(pid: int, out: Path | None) -> Iterator[None]:
    """Sample `pid` and its children while the body runs, into `out` (nothing when None)."""
    if out is None:
        yield
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    spy = subprocess.Popen(  # noqa: S603
        [str(BIN / "py-spy"), "record", "--pid", str(pid), "--subprocesses", "--rate", str(RATE),
         "--format", "raw", "--nonblocking", "--output", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)  # py-spy writes its file and stops
        _, err = spy.communicate(timeout=60)
        if spy.returncode not in (0, -signal.SIGINT) or not out.exists():
            raise RuntimeError(f"py-spy failed ({spy.returncode}): {err.decode()[-500:]}")


def part_of(frame: str) -> str:
    """The part of a request a frame (py-spy's `function (file:line)`) belongs to."""
    found = _FILE.search(frame)
    where = found.group(1) if found else frame
    for part, patterns in PARTS:
        if any(pattern in where for pattern in patterns):
            return part
    return "other"


def budget(lines: list[str]) -> Counter[str]:
    """Samples by part, from py-spy's raw (collapsed) lines: `frame;frame;… count`."""
    parts: Counter[str] = Counter()
    for line in lines:
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        parts[part_of(stack.split(";")[-1])] += int(count)
    return parts


def show(path: Path) -> str:
    parts = budget(path.read_text().splitlines())
    total = sum(parts.values()) or 1
    rows = [f"{os.path.basename(path)} ({total:,} samples at {RATE}/s)"]
    rows += [f"  {part:<15} {count / total:6.1%}" for part, count in parts.most_common()]
    return "\n".join(rows)
