"""Reliability fixtures: a sandbox that enforces ``include/rbac``, the harness on it
(``tests.support.harness``), the fork server of killable workers; the hooks that count the figures.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from hcp_etcd.hooks.hosted_cluster import HostedClusterHook
from tests.support.harness import HA, ONE, RBAC, Figures, Harness, TaskServer, figures_of, record_exec
from tests.support.sandbox import Sandbox, start_sandbox
from tests.support.waits import shorten_poll_intervals, shorten_retry_waits


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Figures:
    """The session's figures, for tests that add to them."""
    return figures_of(request.config)


def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> None:
    """Count each reliability test as a scenario, and each ``test_bad_input`` case as a bad input."""
    if call.when != "call":
        return
    figures = figures_of(item.config)
    figures.scenarios_run += 1
    passed = call.excinfo is None
    figures.scenarios_passed += passed
    figures.bad_inputs += item.name.startswith("test_bad_input")
    figures.outcomes[item.name] = "passed" if passed else "failed"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the figures (the ones docs/RELIABILITY.md quotes)."""
    figures = figures_of(terminalreporter.config)
    if figures.scenarios_run:
        shown = {k: v for k, v in vars(figures).items() if k != "outcomes"}
        terminalreporter.write_line("hcp-etcd reliability figures: " + json.dumps(shown, sort_keys=True))


@pytest.fixture(scope="package")
def rel_box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """A sandbox of its own that enforces ``include/rbac`` for its token: 3 + 1 etcd members.

    kube-apiserver's clocks run fast: Events expire 2 s after they are written (their etcd leases
    are revoked while a quiesced backup runs) and etcd is compacted every 4 s (a restore is verified
    long after its revision is gone), so every scenario runs against etcd history as it moves.
    """
    box = start_sandbox(
        tmp_path_factory.mktemp("reliability-sandbox"),
        "--rbac", str(RBAC), "--cluster", f"{HA}:3", "--cluster", f"{ONE}:1", "--seed-mb", "2",
        "--event-ttl", "2", "--compaction-interval", "4",
    )  # fmt: skip
    try:
        yield box
    finally:
        box.down()


@pytest.fixture(scope="package")
def harness(rel_box: Sandbox) -> Iterator[Harness]:
    """The harness, with the sandbox's connections in the environment and short API-retry waits."""
    mp = pytest.MonkeyPatch()
    for key, value in rel_box.env.items():
        mp.setenv(key, value)
    # The provider's exponential wait (1..15 s) would make each injected 500 cost half a minute,
    # botocore's each injected S3 error several seconds.
    shorten_retry_waits(mp)
    # Poll the waits every 0.25 s instead of every 1-5 s: the same checks, seconds saved per scenario.
    shorten_poll_intervals(mp)
    h = Harness(rel_box)
    mp.setattr(HostedClusterHook, "_connect_exec", record_exec(h, HostedClusterHook._connect_exec))
    sampler = h.start_sampler()
    try:
        yield h
    finally:
        h.stop_sampler(sampler)
        mp.undo()


@pytest.fixture(autouse=True)
def _keep_output(request: pytest.FixtureRequest, capfd: pytest.CaptureFixture[str]) -> Iterator[None]:
    """Keep every test's output (the in-process task logs) for the secret search."""
    yield
    out, err = capfd.readouterr()
    if "harness" in request.fixturenames:
        request.getfixturevalue("harness").logs.append(out + err)
    sys.stdout.write(out)
    sys.stderr.write(err)


@pytest.fixture(scope="package")
def task_server(
    rel_box: Sandbox, harness: Harness, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TaskServer]:
    """The fork server of the killable workers (started once, on first use); their output joins
    the harness's task logs."""
    server = TaskServer(rel_box, tmp_path_factory.mktemp("workers"), harness.logs)
    try:
        yield server
    finally:
        server.close()
