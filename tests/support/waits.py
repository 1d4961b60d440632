"""Short waits between the client libraries' own retries, for tests that inject faults.

A fault test counts attempts and checks outcomes, never how long a back-off lasted: the same
retries happen, with shorter sleeps between them. Without this, each injected S3 503 costs botocore's
exponential back-off (0.5 + 1 + 2 + 4 s on average per failing call) and each Kubernetes 500 the
provider's (1..15 s).
"""

from __future__ import annotations

from typing import Any

import pytest
import tenacity

RETRY_WAIT_SECONDS = 0.05


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
