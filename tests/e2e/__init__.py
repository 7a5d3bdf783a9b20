"""End-to-end tests of the Incident Management System: the whole API, live, over real HTTP.

Usage (from the repository root, with the project's virtual environment)::

    .venv/bin/python run_e2e_tests.py                      # SQLite, everything started here
    .venv/bin/python run_e2e_tests.py --database-url postgresql://postgres@127.0.0.1:5432
    .venv/bin/python run_e2e_tests.py --base-url http://127.0.0.1:8000   # a server already running
    .venv/bin/python run_e2e_tests.py --verbose --report /tmp/e2e-report.json

(`python -m tests.e2e` is the same run.) By default the run starts everything it needs, on
loopback only, and stops it at the end (session.py, with tests/support):

- a real SMTP server (aiosmtpd) that keeps every mail it receives;
- an HTTP receiver (a ThreadingHTTPServer) that records every webhook delivery and answers 200;
- the database: a fresh SQLite file in a temporary directory, or, with
  `--database-url postgresql://user@host:port`, a new database `ims_e2e_<pid>_<random>` on that
  PostgreSQL server (created with asyncpg, dropped at the end; a URL that names a database makes
  the run create that one instead, refusing one that already exists);
- the migrations (`incident-management migrate`), then the API (`python -m uvicorn app.main:app`)
  with its in-process worker, SMTP and webhook signing pointed at the local peers.

Then it walks the product as its users would: signup, login, users, services, integrations, every
alert source with real payloads, incidents through every transition, an escalation policy whose
steps really fire (a page mailed to the SMTP server, a signed webhook action received), notification
preferences, the delivery log, outgoing webhook subscriptions (deliveries verified with their
secret), on-call schedules and their iCal feeds, health, and deleting what it made. Each area is a
module (health, accounts, services, alerts, incidents, schedules, notifications, escalation,
analytics, cleanup) adding its checks to the walk's base (base.py); walk.py sets their order.
Every check asserts what the answer says, not only its status; a failed check is recorded and the
walk goes on (checks that need what it would have made are reported as blocked; checks.py).

Coverage by construction: every request goes through one httpx client (client.py) whose response
hook records (method, OpenAPI path template) for each request the run sent. At the end each
operation of `/v1/openapi.json` must have been called, or the run fails naming the ones that were
not (coverage.py).

With `--base-url` nothing is started, and checks that need the local SMTP server or webhook
receiver are reported as "skipped (external server)". On a database that is not empty the first
signup is no admin: give `--admin-email` and `--admin-password` (or E2E_ADMIN_EMAIL and
E2E_ADMIN_PASSWORD).

The JSON report (default `e2e-report.json` in the current directory; report.py) lists every check
(name, group, status, error, duration), the totals per group and the coverage. Exit status: 0
when every check passed and every operation was called; 1 otherwise; 2 for bad arguments.

No module here is named test_*.py: pytest does not collect the run (`make e2e` runs it).
"""
