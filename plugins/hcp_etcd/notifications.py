"""Failure alerts: an Airflow notifier, configured by a connection, logging by default.

``HcpEtcdFailureNotifier`` is an ``on_failure_callback``. Where the alert goes is decided by the
Airflow connection ``hcp_etcd_alerts`` (another id with env ``HCP_ETCD_ALERT_CONN_ID``):

- no such connection (the default): one ``ERROR`` line in the log (``hcp_etcd.alerts`` logger),
  which a log pipeline can already alert on;
- a connection of type ``http``/``https``: a JSON ``POST`` to its URL (``host`` as a full URL, or
  ``schema://host:port`` + ``extra.endpoint``), with ``extra.headers`` and the password as a bearer
  token when set. The body has ``text`` (what Slack and Mattermost incoming webhooks display) and
  the structured fields.

The message never carries a secret: presigned URLs lose their signature and credential, and the
exception text is cut short.
"""

from __future__ import annotations

import json
import logging
import os
import re
import urllib.request
from typing import Any

from airflow.sdk import BaseHook, BaseNotifier
from airflow.sdk.exceptions import AirflowNotFoundException

ALERT_CONN_ENV = "HCP_ETCD_ALERT_CONN_ID"
DEFAULT_ALERT_CONN_ID = "hcp_etcd_alerts"
WEBHOOK_TYPES = ("http", "https")
alert_log = logging.getLogger("hcp_etcd.alerts")

# SigV4/SigV2 query parameters that make a URL a credential.
_SIGNED_PARAMS = re.compile(
    r"(?i)((?:X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token|Signature|AWSAccessKeyId)=)[^&\s\"']+"
)


def redact(text: str, limit: int = 1000) -> str:
    """Remove presigned-URL signatures and credentials from a text, and cut it to ``limit`` characters.

    :param text: e.g. an exception message.
    :param limit: the most characters kept.
    """
    clean = _SIGNED_PARAMS.sub(r"\1REDACTED", text)
    return clean if len(clean) <= limit else clean[: limit - 1] + "…"


def failure_message(context: Any) -> dict[str, Any]:
    """The alert of a failed task (or run): what failed, on which cluster, and where to look.

    :param context: the Airflow context handed to the callback.
    """
    ti = context.get("ti") or context.get("task_instance")
    dag_run = context.get("dag_run")
    task = context.get("task")
    dag = context.get("dag")
    dag_id = getattr(ti, "dag_id", None) or getattr(dag_run, "dag_id", None) or getattr(dag, "dag_id", None)
    cluster = getattr(task, "hosted_cluster", None)
    error = context.get("exception") or context.get("reason") or ""
    error_text = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else f"{error}"
    msg = {
        "dag_id": dag_id,
        "run_id": getattr(ti, "run_id", None) or getattr(dag_run, "run_id", None) or context.get("run_id"),
        "task_id": getattr(ti, "task_id", None),
        "map_index": getattr(ti, "map_index", None),
        "try_number": getattr(ti, "try_number", None),
        "hosted_cluster": cluster if isinstance(cluster, str) else None,
        "error": redact(error_text),
        "log_url": getattr(ti, "log_url", None),
    }
    where = f" on {msg['hosted_cluster']}" if msg["hosted_cluster"] else ""
    task_part = f" task {msg['task_id']}" if msg["task_id"] else ""
    msg["text"] = f"hcp-etcd: {dag_id}{task_part} failed{where} (run {msg['run_id']}): {msg['error']}"
    return msg


def webhook_url(conn: Any) -> str:
    """The URL of an http connection.

    :param conn: an Airflow ``Connection``.
    """
    host = (conn.host or "").strip()
    endpoint = str((conn.extra_dejson or {}).get("endpoint", "")).lstrip("/")
    if "://" not in host:
        scheme = conn.schema or ("https" if conn.conn_type == "https" else "http")
        host = f"{scheme}://{host}{f':{conn.port}' if conn.port else ''}"
    if not host.startswith(("http://", "https://")) or host.endswith("://"):
        raise ValueError(f"alert connection {conn.conn_id!r} has no http(s) URL in host")
    return f"{host.rstrip('/')}/{endpoint}" if endpoint else host


class HcpEtcdFailureNotifier(BaseNotifier):
    """Alert on a failed hcp-etcd task: a log line by default, a webhook when the connection says so.

    :param conn_id: the alert connection (default: env ``HCP_ETCD_ALERT_CONN_ID`` or ``hcp_etcd_alerts``).
    :param timeout: seconds to wait for the webhook.
    """

    template_fields = ("conn_id",)

    def __init__(self, conn_id: str | None = None, timeout: float = 10.0) -> None:
        """See the class docstring."""
        super().__init__()
        self.conn_id = conn_id or os.environ.get(ALERT_CONN_ENV) or DEFAULT_ALERT_CONN_ID
        self.timeout = timeout

    def _connection(self) -> Any | None:
        try:
            return BaseHook.get_connection(self.conn_id)
        except AirflowNotFoundException:
            return None

    def notify(self, context: Any) -> None:
        """Send the alert.

        :param context: the Airflow context.
        """
        msg = failure_message(context)
        conn = self._connection()
        if conn is None or conn.conn_type not in WEBHOOK_TYPES:
            # The default: a log line is an alert every deployment already collects.
            alert_log.error("%s", msg["text"])
            return
        body = json.dumps(msg).encode()
        headers = {"Content-Type": "application/json", **dict((conn.extra_dejson or {}).get("headers") or {})}
        if conn.password:
            headers["Authorization"] = f"Bearer {conn.password}"
        request = urllib.request.Request(webhook_url(conn), data=body, headers=headers, method="POST")  # noqa: S310 - scheme checked in webhook_url
        with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
            self.log.info("alert sent to connection %s (HTTP %s)", self.conn_id, response.status)


def failure_callbacks() -> list[HcpEtcdFailureNotifier]:
    """What the DAGs put in ``on_failure_callback`` (a list, so a deployment can append its own)."""
    return [HcpEtcdFailureNotifier()]
