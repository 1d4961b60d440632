"""Short waits between the client libraries' own retries, and between the triggers' polls; and the
tests' own wait for a state (:func:`wait_until`).

A fault test counts attempts and checks outcomes, never how long a back-off lasted: the same
retries happen, with shorter sleeps between them. Without this, each injected S3 503 costs botocore's
exponential back-off (0.5 + 1 + 2 + 4 s on average per failing call) and each Kubernetes 500 the
provider's (1..15 s).

A trigger that polls sooner waits for the same state: the probe, its answer and the timeout are the
same, the wait only ends closer to the moment the state is reached.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tenacity

RETRY_WAIT_SECONDS = 0.05
# The operators' inline cadence (``INLINE_POLL_SECONDS`` of ``hcp_etcd.operators.backup``).
POLL_SECONDS = 0.25


def _short_delay(base: Any, growth_factor: float, attempts: int) -> float:
    """botocore's legacy retry delay (``base * growth_factor ** (attempts - 1)``), capped."""
    return RETRY_WAIT_SECONDS


def shorten_retry_waits(patch: pytest.MonkeyPatch) -> None:
    """Patch the back-off of botocore's retries and of the Kubernetes provider's API retries.

    botocore builds each client's retry handler from ``retryhandler.delay_exponential`` when the
    client is made, so this must run before the clients of the test are created.
    """
    from airflow.providers.cncf.kubernetes import kubernetes_helper_functions
    from botocore import retryhandler

    patch.setattr(retryhandler, "delay_exponential", _short_delay)
    patch.setattr(kubernetes_helper_functions, "_default_wait", tenacity.wait_fixed(RETRY_WAIT_SECONDS))


def shorten_poll_intervals(patch: pytest.MonkeyPatch, seconds: float = POLL_SECONDS) -> None:
    """Make every trigger of the project poll at least every ``seconds``.

    A task that runs its trigger in the worker (``deferrable=False``, as the harness runs them) polls
    at the trigger's own interval (1 to 5 s, meant for the triggerer): each quiesce, resume, pause
    confirmation or teardown would cost up to that much after the state was reached.
    """
    from hcp_etcd.triggers.base import KubernetesPollingTrigger

    original = KubernetesPollingTrigger.__init__

    def init(self: KubernetesPollingTrigger, *args: Any, poll_interval: float = 5, **kwargs: Any) -> None:
        original(self, *args, poll_interval=min(poll_interval, seconds), **kwargs)

    patch.setattr(KubernetesPollingTrigger, "__init__", init)


def wait_until(
    what: str,
    check: Callable[[], Any],
    timeout: float,
    every: float = 0.25,
    log: Path | None = None,
    detail: Callable[[], str] | None = None,
) -> Any:
    """Poll ``check`` until it returns something truthy, and return that; a ``TimeoutError`` naming
    ``what`` (and the tail of ``log``, the process that should have got there) after ``timeout`` s.

    :param what: what is waited for, as the error says it.
    :param check: the probe.
    :param timeout: seconds.
    :param every: seconds between probes.
    :param log: a log file whose end the error quotes.
    :param detail: what the error adds of the state the wait ended in (asked only on a timeout).
    """
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log is not None and log.exists() else ""
            ending = f"; {log.name} ends with:\n{tail}" if tail else ""
            if detail is not None:
                ending += f"; {detail()}"
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}{ending}")
        time.sleep(every)
    return value
