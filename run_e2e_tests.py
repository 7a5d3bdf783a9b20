#!/usr/bin/env python3
"""End-to-end tests of the Incident Management System: the whole API, live, over real HTTP.

The entry point `make e2e` and `make e2e-postgres` run; the run itself is the package tests/e2e
(its docstring and docs/testing.md say what it starts and checks). From the repository root::

    .venv/bin/python run_e2e_tests.py                      # SQLite, everything started here
    .venv/bin/python run_e2e_tests.py --database-url postgresql://postgres@127.0.0.1:5432
    .venv/bin/python run_e2e_tests.py --base-url http://127.0.0.1:8000   # a server already running
    .venv/bin/python run_e2e_tests.py --help
"""

import sys

from tests.e2e.main import run

if __name__ == "__main__":
    sys.exit(run())
