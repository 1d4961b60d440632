"""The polling loop every hcp-etcd trigger shares. Triggers only wait: they change nothing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

from airflow.providers.cncf.kubernetes.hooks.kubernetes import AsyncKubernetesHook
from airflow.triggers.base import BaseTrigger, TriggerEvent
from kubernetes_asyncio import client as async_client

State = Literal["done", "failed", "waiting"]


class KubernetesPollingTrigger(BaseTrigger):
    """Poll the management cluster until a probe says done or failed, or time out.

    Subclasses implement :meth:`probe` and :meth:`probe_kwargs`; the loop, the timeout, the
    tolerance of API errors (control planes restart while we wait) and the events are here.
    Events: ``success`` (``elapsed`` plus :meth:`success_details`), ``failed`` (``message``: final,
    no point waiting longer) and ``timeout`` (``message``: what was still missing).

    :param kubernetes_conn_id: the Kubernetes connection.
    :param timeout: seconds before a ``timeout`` event.
    :param poll_interval: seconds between polls.
    :param started_at: wall-clock start (kept across triggerer restarts).
    """

    def __init__(
        self,
        kubernetes_conn_id: str = "kubernetes_default",
        timeout: float = 1200,
        poll_interval: float = 5,
        started_at: float | None = None,
    ) -> None:
        """See the class docstring."""
        super().__init__()
        self.kubernetes_conn_id = kubernetes_conn_id
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.started_at = started_at if started_at is not None else time.time()

    def probe_kwargs(self) -> dict[str, Any]:
        """The subclass's own constructor arguments, for :meth:`serialize`."""
        raise NotImplementedError

    async def probe(self, api: async_client.ApiClient) -> tuple[State, str]:
        """One look: the state, and what is missing (``waiting``) or wrong (``failed``).

        :param api: an async Kubernetes API client.
        """
        raise NotImplementedError

    def success_details(self) -> dict[str, Any]:
        """Extra fields of the ``success`` event."""
        return {}

    def describe(self) -> str:
        """What is awaited, for the log."""
        return type(self).__name__

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Classpath and kwargs."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                **self.probe_kwargs(),
                "kubernetes_conn_id": self.kubernetes_conn_id,
                "timeout": self.timeout,
                "poll_interval": self.poll_interval,
                "started_at": self.started_at,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll; yield one event."""
        hook = AsyncKubernetesHook(conn_id=self.kubernetes_conn_id)
        message, last_error = "not checked yet", ""
        while True:
            try:
                async with hook.get_conn() as api:
                    state, message = await self.probe(api)
                last_error = ""
            except Exception as err:
                # API hiccups are expected while control planes restart: keep waiting until the timeout.
                state, last_error = "waiting", f"{type(err).__name__}: {str(err)[:300]}"
                self.log.warning("probe failed, will retry: %s", last_error)
            elapsed = time.time() - self.started_at
            if state == "done":
                yield TriggerEvent({"status": "success", "elapsed": elapsed, **self.success_details()})
                return
            if state == "failed":
                yield TriggerEvent({"status": "failed", "elapsed": elapsed, "message": message})
                return
            if elapsed > self.timeout:
                detail = message + (f"; last error: {last_error}" if last_error else "")
                yield TriggerEvent({"status": "timeout", "elapsed": elapsed, "message": detail})
                return
            self.log.info("waiting for %s: %s", self.describe(), message or last_error)
            await asyncio.sleep(self.poll_interval)


class HostedClusterTrigger(KubernetesPollingTrigger):
    """A poll about one HostedCluster: its ``namespace`` and ``name``, serialised with the rest.

    :param namespace: the HostedCluster's namespace.
    :param name: its name.
    :param kwargs: :class:`KubernetesPollingTrigger` arguments.
    """

    def __init__(self, namespace: str, name: str, **kwargs: Any) -> None:
        """See the class docstring."""
        super().__init__(**kwargs)
        self.namespace = namespace
        self.name = name

    def probe_kwargs(self) -> dict[str, Any]:
        """This trigger's own arguments."""
        return {"namespace": self.namespace, "name": self.name}
