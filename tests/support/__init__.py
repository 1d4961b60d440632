"""What the tests are built on, importable by every test (conftests hold only fixtures).

- :mod:`tests.support.sandbox`: starting and stopping a sandbox, its CLI, and the client of its own
  ``/sandbox/v1`` API (request log, faults);
- :mod:`tests.support.fork_server`: a process that imports once and forks a worker per request (a
  fork costs milliseconds, a fresh interpreter that imports Airflow seconds);
- :mod:`tests.support.airflow`: Airflow homes on a sandbox (one migrated metadata DB per session,
  copied) and ``dag.test()`` runs served by the fork server;
- :mod:`tests.support.harness`: the reliability harness that runs the real operators the way Airflow
  does and checks the safety invariants; :mod:`tests.support.operator_worker`: the workers it kills;
- :mod:`tests.support.waits`: short back-off between the client libraries' retries in fault tests;
- :mod:`tests.support.api_server`: the sandbox's API server in the test process (tests/sandbox);
- :mod:`tests.support.suites`: ``make test``, the suites side by side.
"""
