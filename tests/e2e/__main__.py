"""`python -m tests.e2e`: the same run as `python run_e2e_tests.py`."""

import sys

from tests.e2e.main import run

sys.exit(run())
