"""The production-shaped tier's fixtures: one sandbox and one Airflow of docker-compose.yaml per session.

``make test-prod`` runs this package alone (``make test`` leaves it out): Postgres, Redis and six
Airflow processes beside the sandbox are a load of their own.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.harness import Harness
from tests.support.production import DAGS, FLEET, Production, start_production
from tests.support.sandbox import Sandbox, start_rbac_sandbox


@pytest.fixture(scope="session")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """The fleet's sandbox, enforcing include/rbac for Airflow's token."""
    args = [a for name, members in FLEET.items() for a in ("--cluster", f"{name}:{members}")]
    sandbox = start_rbac_sandbox(tmp_path_factory.mktemp("sandbox"), *args, "--seed-mb", "4")
    try:
        yield sandbox
    finally:
        sandbox.down()


@pytest.fixture(scope="session")
def harness(box: Sandbox) -> Iterator[Harness]:
    """The tests' view of the sandbox (HostedClusters, S3, the keys), with its connections."""
    mp = pytest.MonkeyPatch()
    for key, value in box.env.items():
        mp.setenv(key, value)
    try:
        yield Harness(box)
    finally:
        mp.undo()


@pytest.fixture(scope="session")
def prod(box: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Production]:
    """The Airflow of docker-compose.yaml on the sandbox, started once for the session."""
    with start_production(tmp_path_factory.mktemp("production"), box.dir / "airflow.env", DAGS) as airflow:
        yield airflow
