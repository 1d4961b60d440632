"""What the three DAGs share: settings read from the environment at parse time, and their Params.

DAG files call this at parse time, so it reads environment variables only (no Variable or
Connection lookups: those are I/O), and reads them when called, so every parse sees the current
environment. One definition per Param keeps the backup, restore and drill
forms in step: the same bucket, prefixes and connections mean the same thing in each.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from airflow.sdk import CronTriggerTimetable, Param

from hcp_etcd.naming import CLUSTER_REF_PATTERN, S3_PREFIX_PATTERN
from hcp_etcd.notifications import failure_callbacks

DEFAULT_PREFIX = "hcp-etcd/backups"
DEFAULT_KEY_PREFIX = "hcp-etcd/keys"
# S3's rules for bucket names; empty only so that a DAG parses where HCP_ETCD_BUCKET is unset
# (the first task of each DAG refuses an empty bucket with a message saying what to set).
_BUCKET_PATTERN = r"^$|^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"


def cron_schedule(cron: str) -> CronTriggerTimetable:
    """A cron schedule (UTC) whose first run is the next slot to come, never one already past.

    A DAG with a ``start_date`` and ``catchup=False`` runs the latest past slot as soon as it is
    unpaused: a nightly backup unpaused at 14:00 would quiesce the whole fleet at 14:00. Without a
    ``start_date`` (the DAGs have none), ``run_immediately`` decides, and ``timedelta(0)`` means
    "wait for the next slot" (``False`` would still run a slot less than 10 % of a period old).
    Once the DAG has run, a slot missed while the scheduler was down runs once when it is back.

    :param cron: a cron expression or preset (``@daily``).
    """
    return CronTriggerTimetable(cron, timezone="UTC", run_immediately=timedelta(0))


def ref(name: str) -> str:
    """A template that renders the Param ``name`` (native objects: ``render_template_as_native_obj``).

    :param name: the Param.
    """
    return "{{ params.%s }}" % name  # noqa: UP031 - Jinja braces make an f-string unreadable


def default_args(**extra: Any) -> dict[str, Any]:
    """Retries and the failure alert every task of the project's DAGs has.

    :param extra: more default arguments (e.g. a pool).
    """
    retry_delay = timedelta(seconds=float(os.environ.get("HCP_ETCD_RETRY_DELAY_SECONDS", "30")))
    return {"retries": 2, "retry_delay": retry_delay, "on_failure_callback": failure_callbacks(), **extra}


def hosted_clusters(description: str) -> Param:
    """``hosted_clusters``: a list of ``namespace/name``.

    :param description: what the list is for in this DAG.
    """
    return Param(
        [],
        type="array",
        items={"type": "string", "pattern": CLUSTER_REF_PATTERN, "maxLength": 317},
        uniqueItems=True,
        description=description,
    )


def label_selector(default: str, description: str) -> Param:
    """``label_selector`` for HostedClusters when ``hosted_clusters`` is empty.

    :param default: the selector by default.
    :param description: what it selects in this DAG.
    """
    return Param(default, type="string", maxLength=1024, description=description)


def storage(key_prefix_description: str) -> dict[str, Param]:
    """``bucket``, ``prefix`` and ``key_prefix``: where backups and escrowed keys are.

    :param key_prefix_description: what the key prefix means in this DAG.
    """
    return {
        "bucket": Param(
            os.environ.get("HCP_ETCD_BUCKET", ""),
            type="string",
            maxLength=63,
            pattern=_BUCKET_PATTERN,
            description="S3 bucket of the backups (default: env HCP_ETCD_BUCKET; required).",
        ),
        "prefix": Param(
            DEFAULT_PREFIX,
            type="string",
            pattern=S3_PREFIX_PATTERN,
            maxLength=512,
            description="Key prefix of the backups: {prefix}/{ns}/{name}/{YYYYmmddTHHMMSSZ}/snapshot.db "
            "and manifest.json.",
        ),
        "key_prefix": Param(
            DEFAULT_KEY_PREFIX,
            type="string",
            pattern=S3_PREFIX_PATTERN,
            maxLength=512,
            description=key_prefix_description,
        ),
    }


def restore_limits(url_expiry_max_hours: int, what: str) -> dict[str, Param]:
    """``url_expiry_hours`` and ``wait_timeout_minutes`` of a restore.

    :param url_expiry_max_hours: SigV4's limit on a presigned URL's lifetime.
    :param what: the cluster being restored ("the new cluster", "a drill cluster").
    """
    return {
        "url_expiry_hours": Param(
            4,
            type="integer",
            minimum=1,
            maximum=url_expiry_max_hours,
            description=f"Lifetime of the presigned snapshot URL (SigV4: at most {url_expiry_max_hours} h).",
        ),
        "wait_timeout_minutes": Param(
            60,
            type="integer",
            minimum=5,
            maximum=1440,
            description=f"How long to wait for {what} to be Available with EtcdSnapshotRestored.",
        ),
    }


def connections() -> dict[str, Param]:
    """``kubernetes_conn_id`` and ``aws_conn_id`` (defaults per deployment from the environment)."""
    return {
        "kubernetes_conn_id": Param(
            os.environ.get("HCP_ETCD_KUBERNETES_CONN_ID", "kubernetes_default"),
            type="string",
            minLength=1,
            description="Kubernetes connection id (default: env HCP_ETCD_KUBERNETES_CONN_ID).",
        ),
        "aws_conn_id": Param(
            os.environ.get("HCP_ETCD_AWS_CONN_ID", "aws_default"),
            type="string",
            minLength=1,
            description="AWS connection id (default: env HCP_ETCD_AWS_CONN_ID).",
        ),
    }


# Operator arguments that every task of a DAG takes from its Params.
KUBERNETES = {"kubernetes_conn_id": ref("kubernetes_conn_id")}
STORE = {**KUBERNETES, "aws_conn_id": ref("aws_conn_id"), "bucket": ref("bucket"), "prefix": ref("prefix")}
