"""Shared fixtures: the sandbox (a HyperShift management cluster in a box) and the session's
migrated Airflow metadata DB. What they hand out is described in ``tests/support``.

``sandbox`` (session scope) starts, once per test session, a sandbox (``tests.support.sandbox``)
with ``--cluster ha-one:3 --cluster single-one:1 --seed-mb 4`` and stops it at the end (asserting
that no process of it is left).

Hosted clusters: ``clusters/ha-one`` (3 etcd members, HighlyAvailable, control plane in
``clusters-ha-one``) and ``clusters/single-one`` (1 member, SingleReplica). Tests that change them
must put them back (unpause, restart members, clear faults they did not consume).

``make_sandbox`` (function scope) is a factory for a test that needs a sandbox of its own:
``make_sandbox("--cluster", "x:1")`` starts one in a fresh directory, stopped after the test.

Every test process parses the AWS models and checks each Param schema once
(``tests.support.library_caches``).

``metadata_db`` (session scope): one ``airflow db migrate`` per session (or one for all the sessions
of ``make test``), copied into each Airflow home (``tests.support.airflow``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.support import library_caches
from tests.support.airflow import MetadataDb, session_metadata_db
from tests.support.sandbox import UP_ARGS, Sandbox, start_sandbox


def pytest_configure(config: pytest.Config) -> None:
    """The tasks this process runs itself do the libraries' pure work once (tests.support.library_caches)."""
    library_caches.install()


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """The shared sandbox: ``ha-one`` (3 members) and ``single-one`` (1), 4 MiB of seed data each."""
    box = start_sandbox(tmp_path_factory.mktemp("sandbox"), *UP_ARGS)
    try:
        yield box
    finally:
        box.down()


@pytest.fixture
def make_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Sandbox]]:
    """A factory: ``make_sandbox(*up_args)`` starts an isolated sandbox, stopped after the test."""
    started: list[Sandbox] = []

    def make(*up_args: str) -> Sandbox:
        box = start_sandbox(tmp_path_factory.mktemp("own-sandbox"), *up_args)
        started.append(box)
        return box

    yield make
    for box in started:
        box.down()


@pytest.fixture(scope="session")
def metadata_db(tmp_path_factory: pytest.TempPathFactory) -> MetadataDb:
    """The session's migrated metadata DB (and a copy with the backup pool), to copy into homes."""
    return session_metadata_db(tmp_path_factory.mktemp("metadata-db"))
