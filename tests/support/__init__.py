"""What the tests, the end-to-end run, the fault tests, the benchmarks and the fuzzer share.

One module per concern, each with one implementation: loopback ports (`ports`), waiting with a
deadline (`waiting`), the SMTP server (`smtp`) and the HTTP receiver (`receivers`) that stand in
for mail and webhook peers, the service's processes started and ended by their PID
(`processes`), PostgreSQL databases and clusters made and dropped (`databases`), settings and
process environments (`settings`), and the data the tests set up (`data`, `analytics`, `api`,
`console`, `harness`, `load`, `invariants`).

Nothing here is collected by pytest (no module is named test_*.py); fixtures that several
directories use live in a conftest.py, or in a module of this package that tests/conftest.py
registers as a plugin (`analytics`). See docs/testing.md.
"""
