"""Integration fixtures: the sandboxes under include/rbac, Airflow homes on them (``dag.test()``
runs, see ``tests.support.airflow``).

Least privilege: the sandboxes here (``sandbox``, ``make_sandbox``) enforce ``include/rbac`` for the
token Airflow is given, so every DAG run is a run under the shipped RBAC, and after each test the
request log must show no 403 for that token. A test's own setup and inspection (patching a lock in,
reading a restored key, deleting what a restore made) goes through the sandbox's admin kubeconfig
(``Sandbox.admin_kubeconfig``), which the RBAC does not restrict: the tests never widen it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.support.airflow import AirflowEnv, MetadataDb, make_airflow_env
from tests.support.sandbox import UP_ARGS, Sandbox, start_rbac_sandbox


@pytest.fixture(scope="session")
def airflow_env(sandbox: Sandbox, metadata_db: MetadataDb, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[AirflowEnv]:  # fmt: skip
    """An Airflow home on the shared sandbox (one per session)."""
    env = make_airflow_env(tmp_path_factory.mktemp("airflow-home"), sandbox.env, metadata_db)
    yield env
    env.close()


@pytest.fixture
def airflow_env_for(airflow_env: AirflowEnv) -> Callable[[Sandbox], AirflowEnv]:
    """A factory: the session's Airflow home and fork server, running on a given (own) sandbox
    (:meth:`AirflowEnv.on`); its runs join the home's metadata DB and logs."""
    return lambda box: airflow_env.on(box.env)


# `sandbox` itself is overridden, not only how it starts: pytest keeps one instance of a session
# fixture per definition, so this one is separate from the unrestricted sandbox of tests/sandbox.
@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """The shared sandbox of tests/conftest.py (``ha-one``, ``single-one``), enforcing include/rbac."""
    box = start_rbac_sandbox(tmp_path_factory.mktemp("sandbox"), *UP_ARGS)
    try:
        yield box
    finally:
        box.down()


@pytest.fixture
def make_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Sandbox]]:
    """``make_sandbox(*up_args)``: a sandbox of the test's own, enforcing include/rbac; after the
    test, no request of Airflow's token was refused."""
    started: list[tuple[Sandbox, int]] = []

    def make(*up_args: str) -> Sandbox:
        box = start_rbac_sandbox(tmp_path_factory.mktemp("own-sandbox"), *up_args)
        started.append((box, box.api.seq()))  # after the probe's own 403
        return box

    yield make
    try:
        for box, seq in started:
            refused = box.api.refused_since(seq)
            assert not refused, f"include/rbac lacks what the DAGs did: {refused}"
    finally:
        for box, _ in started:
            box.down()


@pytest.fixture(autouse=True)
def _nothing_refused(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test on the shared sandbox: include/rbac refused none of Airflow's requests."""
    if "sandbox" not in request.fixturenames:
        yield
        return
    box: Sandbox = request.getfixturevalue("sandbox")
    seq = box.api.seq()
    yield
    refused = box.api.refused_since(seq)
    assert not refused, f"include/rbac lacks what the DAGs did: {refused}"
