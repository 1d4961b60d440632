"""Failure alerts: an Airflow notifier, configured by a connection, logging by default.

``HcpEtcdFailureNotifier`` is an ``on_failure_callback``. Where the alert goes is decided by the
Airflow connection ``hcp_etcd_alerts`` (another id with env ``HCP_ETCD_ALERT_CONN_ID``):

- no such connection (the default): one ``ERROR`` line in the log (``hcp_etcd.alerts`` logger),
  which a log pipeline can already alert on;
- a connection of type ``http``/``https``: a JSON ``POST`` through the HTTP provider's
  ``HttpHook``, with its rules for the connection: the URL is ``host`` (a full URL, e.g. a Slack
  webhook's, or a host name with ``schema`` and ``port``), ``extra`` keys are request headers (but
  for the hook's own options: ``timeout``, ``verify``, ``proxies``...), ``login`` + ``password`` is
  basic auth. A ``password`` without ``login`` is sent as a bearer token. The body has ``text``
  (what Slack and Mattermost incoming webhooks display) and the structured fields. When the post
  fails, the alert is logged as in the default, with the reason, so it is never lost.

The message never carries a secret: presigned URLs lose their signature and credential, and the
exception text is cut short.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

from airflow.sdk import BaseHook, BaseNotifier
from airflow.sdk.exceptions import AirflowException, AirflowNotFoundException

ALERT_CONN_ENV = "HCP_ETCD_ALERT_CONN_ID"
DEFAULT_ALERT_CONN_ID = "hcp_etcd_alerts"
WEBHOOK_TYPES = ("http", "https")
alert_log = logging.getLogger("hcp_etcd.alerts")

# SigV4/SigV2 query parameters that make a URL a credential.
_SIGNED_PARAMS = re.compile(
    r"(?i)((?:X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token|Signature|AWSAccessKeyId)=)[^&\s\"']+"
)
# The same in an S3 error document (SignatureDoesNotMatch quotes the signature and the signed request).
_SIGNED_ELEMENTS = re.compile(
    r"(?is)(<(SignatureProvided|AWSAccessKeyId|StringToSign|StringToSignBytes|CanonicalRequest"
    r"|CanonicalRequestBytes)>).*?(</\2>)"
)


def redact(text: str, limit: int = 1000) -> str:
    """Remove presigned-URL signatures and credentials from a text, and cut it to ``limit`` characters.

    :param text: e.g. an exception message.
    :param limit: the most characters kept.
    """
    clean = _SIGNED_ELEMENTS.sub(r"\1REDACTED\3", _SIGNED_PARAMS.sub(r"\1REDACTED", text))
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
        try:
            self._post(conn, msg)
        except Exception as err:  # the post failed: the alert must not be lost with it
            # Only the status line of an HTTP error: other errors quote the URL, a webhook's secret.
            reason = f"{type(err).__name__}: {err}" if type(err) is AirflowException else type(err).__name__
            alert_log.error("%s (alert connection %s failed: %s)", msg["text"], self.conn_id, reason[:200])

    def _post(self, conn: Any, msg: dict[str, Any]) -> None:
        # Imported when an alert is sent: DAG files import this module when they are parsed.
        from airflow.providers.http.hooks.http import HttpHook

        headers = {"Content-Type": "application/json"}
        if conn.password and not conn.login:  # with a login, the hook sends basic auth
            headers["Authorization"] = f"Bearer {conn.password}"
        # The connection's own timeout, when it has one, wins over the notifier's default.
        options = {} if "timeout" in (conn.extra_dejson or {}) else {"timeout": self.timeout}
        hook = HttpHook(method="POST", http_conn_id=self.conn_id)
        response = hook.run(json=msg, headers=headers, extra_options=options)
        self.log.info("alert sent to connection %s (HTTP %s)", self.conn_id, response.status_code)


def failure_callbacks() -> list[HcpEtcdFailureNotifier]:
    """What the DAGs put in ``on_failure_callback`` (a list, so a deployment can append its own)."""
    return [HcpEtcdFailureNotifier()]
