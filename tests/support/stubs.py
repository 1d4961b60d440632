"""Light stand-ins for Airflow's runtime objects, for unit tests of one operator (no imports of
Airflow's runtime, no sandbox)."""

from __future__ import annotations

from typing import Any


class RecordingTi:
    """A task instance that keeps what the operator pushes to XCom (``.xcom``: key -> value)."""

    def __init__(self) -> None:
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        """Keep ``value`` under ``key``."""
        self.xcom[key] = value
