"""The container's HEALTHCHECK (`python -m app.healthcheck`): GET /health/ready from the API that
gunicorn serves in this container; exit 0 on a 200, 1 otherwise (the answer or the error printed).

The standard library's urllib, since a slim image has no curl. The address comes from
GUNICORN_BIND, as app/gunicorn_conf.py reads it; the Host header is one that TRUSTED_HOSTS
accepts (the container's own address would get 400 once TRUSTED_HOSTS names the public host).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

# app/gunicorn_conf.py's bind when GUNICORN_BIND is unset.
DEFAULT_BIND = "0.0.0.0:8000"
TIMEOUT_SECONDS = 8.0


def ready_url(bind: str) -> str:
    """The /health/ready URL of gunicorn's first address (`HOST:PORT`, several separated by commas
    or spaces), reached from inside the container: a wildcard address is reached on loopback."""
    first = bind.replace(",", " ").split()[0] if bind.strip() else DEFAULT_BIND
    if first.startswith(("unix:", "fd://")):
        raise ValueError(f"GUNICORN_BIND={bind!r}: the health check needs a TCP address")
    host, colon, port = first.rpartition(":")
    if not colon or not port.isdigit():
        raise ValueError(f"GUNICORN_BIND={bind!r}: expected HOST:PORT")
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "::"):  # noqa: S104 (a bind address read, never listened on)
        host = "::1" if host == "::" else "127.0.0.1"
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/health/ready"


def host_header(allowed_hosts: list[str]) -> str | None:
    """A Host header the app's TRUSTED_HOSTS accepts; None when it accepts any."""
    if "*" in allowed_hosts:
        return None
    first = allowed_hosts[0]
    return "healthcheck" + first[1:] if first.startswith("*.") else first


def check(url: str, host: str | None) -> tuple[bool, str]:
    request = urllib.request.Request(url, headers={"Host": host} if host else {})  # noqa: S310
    # Never through a proxy named in the environment: this is the container's own server.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=TIMEOUT_SECONDS) as answer:
            return True, f"{url}: {answer.status} {answer.read().decode(errors='replace')}"
    except urllib.error.HTTPError as exc:
        return False, f"{url}: {exc.code} {exc.read().decode(errors='replace')}"
    except (OSError, ValueError) as exc:
        return False, f"{url}: {exc}"


def main() -> int:
    from pydantic import ValidationError

    from app.core.config import Settings

    try:
        allowed_hosts = Settings().allowed_hosts
        url = ready_url(os.environ.get("GUNICORN_BIND", DEFAULT_BIND))
    except (ValidationError, ValueError) as exc:
        print(f"health check: {exc}", file=sys.stderr)
        return 1
    ok, report = check(url, host_header(allowed_hosts))
    print(report, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
