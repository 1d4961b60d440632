"""What the three DAGs share: settings read from the environment at parse time, and their Params.

DAG files call this at parse time, so it reads environment variables only (no Variable or
Connection lookups: those are I/O), and reads them when called, so every parse sees the current
environment. One definition per Param keeps the backup, restore and drill
forms in step: the same bucket, prefixes and connections mean the same thing in each.

A setting read at parse never raises: an invalid value would make the DAG file fail to import, and
the DAG would vanish from the UI with an import error nobody reads. An invalid value falls back to
the default (the Param's form says so), and the first task of each DAG fails with the problem
(:func:`check_settings`), so the run shows it where the user looks.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from airflow.sdk import CronTriggerTimetable, Param

from hcp_etcd.errors import ConfigurationError
from hcp_etcd.naming import CLUSTER_REF_PATTERN, S3_PREFIX_PATTERN, validate_prefix
from hcp_etcd.notifications import failure_callbacks

DEFAULT_PREFIX = "hcp-etcd/backups"
DEFAULT_KEY_PREFIX = "hcp-etcd/keys"
# S3's rules for bucket names; empty only so that a DAG parses where HCP_ETCD_BUCKET is unset
# (the first task of each DAG refuses an empty bucket with a message saying what to set).
_BUCKET_PATTERN = r"^$|^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
BUCKET_ENV = "HCP_ETCD_BUCKET"
REPLICA_BUCKET_ENV = "HCP_ETCD_REPLICA_BUCKET"
REPLICA_AWS_CONN_ID_ENV = "HCP_ETCD_REPLICA_AWS_CONN_ID"
REPLICA_KMS_KEY_ID_ENV = "HCP_ETCD_REPLICA_KMS_KEY_ID"
RETRY_DELAY_ENV = "HCP_ETCD_RETRY_DELAY_SECONDS"
DEFAULT_RETRY_DELAY_SECONDS = 30.0


# The dialect of every Param's schema. Airflow checks a Param's schema against its dialect's
# metaschema each time it resolves the Param (jsonschema's validate), and it resolves every Param of
# every task whenever it serializes a DAG: at each parse of a DAG file, 700 resolves per backup DAG.
# jsonschema's default, 2020-12, costs 0.30 ms a check, draft-07 0.06 ms (measured), which took the
# serialization of a backup DAG from 406 to 162 ms (BENCHMARKS.md, figure 6). Every keyword the
# Params use (type, enum, pattern, min/maxLength, minimum/maximum, items, uniqueItems, format) means
# the same in both; Airflow's form reads the same keywords either way.
SCHEMA_DIALECT = "http://json-schema.org/draft-07/schema#"


def param(default: Any, **schema: Any) -> Param:
    """A Param with a JSON Schema of :data:`SCHEMA_DIALECT`: what ``Param(default, **schema)`` takes.

    :param default: the value by default.
    :param schema: ``description`` and the schema's keywords.
    """
    return Param(default, **{"$schema": SCHEMA_DIALECT}, **schema)


def env_bucket() -> tuple[str, str | None]:
    """``HCP_ETCD_BUCKET`` if it is a valid bucket name, else ``""``; and the problem, if any."""
    raw = os.environ.get(BUCKET_ENV, "").strip()
    if re.fullmatch(_BUCKET_PATTERN, raw):
        return raw, None
    return "", f"{BUCKET_ENV}={raw!r} is not a valid S3 bucket name (3-63 of a-z, 0-9, '.', '-')"


def env_retry_delay() -> tuple[timedelta, str | None]:
    """``HCP_ETCD_RETRY_DELAY_SECONDS`` (default 30 s); and the problem, if any."""
    raw = os.environ.get(RETRY_DELAY_ENV, "").strip()
    if not raw:
        return timedelta(seconds=DEFAULT_RETRY_DELAY_SECONDS), None
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= 3600:
        problem = f"{RETRY_DELAY_ENV}={raw!r} is not a number of seconds between 0 and 3600"
        return timedelta(seconds=DEFAULT_RETRY_DELAY_SECONDS), problem
    return timedelta(seconds=seconds), None


def env_text(name: str, default: str) -> str:
    """A non-empty text setting (a connection id, a pool): ``default`` when unset or blank.

    :param name: the environment variable.
    :param default: its default.
    """
    return os.environ.get(name, "").strip() or default


def env_schedule(name: str, default: str) -> tuple[CronTriggerTimetable | None, str | None]:
    """The cron schedule in ``name`` (see :func:`cron_schedule`); the default's when it is invalid.

    Unset or blank means the default, except for a schedule that may be turned off
    (:data:`SCHEDULES_THAT_MAY_BE_OFF`): set to blank, it is None (manual runs only).

    :param name: the environment variable.
    :param default: the default cron expression.
    """
    value = os.environ.get(name)
    if value is not None and not value.strip() and name in SCHEDULES_THAT_MAY_BE_OFF:
        return None, None
    raw = (value or "").strip() or default
    schedule = cron_schedule(raw)
    try:
        schedule.validate()
    except Exception as err:  # AirflowTimetableInvalid, or croniter's own errors
        return cron_schedule(default), f"{name}={raw!r} is not a cron expression ({err}); using {default!r}"
    return schedule, None


def setting_problems(*schedules: tuple[str, str]) -> list[str]:
    """Every invalid setting of the environment, read now.

    :param schedules: ``(variable, default)`` of the schedules the DAG reads.
    """
    # The bucket is checked where it is used (:func:`require_bucket`): a run given a bucket Param
    # does not need HCP_ETCD_BUCKET.
    problems = [env_retry_delay()[1]]
    problems += [env_schedule(name, default)[1] for name, default in schedules]
    return [p for p in problems if p]


def check_settings(*schedules: tuple[str, str]) -> None:
    """Fail (no retries) when a setting of the environment is invalid: the first task of each DAG.

    :param schedules: ``(variable, default)`` of the schedules the DAG reads.
    """
    problems = setting_problems(*schedules)
    if problems:
        raise ConfigurationError(
            "invalid settings in the Airflow environment: "
            + "; ".join(problems)
            + ". Fix them and run again."
        )


def require_bucket(bucket: Any) -> str:
    """The bucket a task was given, or a clear error (no retries) saying what to set.

    :param bucket: the rendered ``bucket`` Param.
    """
    if bucket and re.fullmatch(_BUCKET_PATTERN, str(bucket)):
        return str(bucket)
    if bucket:
        raise ConfigurationError(f"bucket {bucket!r} is not a valid S3 bucket name")
    problem = env_bucket()[1]
    raise ConfigurationError(
        problem or f"no bucket given: set the bucket Param or {BUCKET_ENV} in the Airflow environment"
    )


@dataclass(frozen=True)
class StoreSettings:
    """Where a task reads and writes in S3: its rendered settings, validated once (build it with
    :meth:`validate`; each field is then a checked ``str``).

    :param bucket: the backup bucket.
    :param prefix: the backup prefix (no empty or ``..`` segments; may be empty).
    :param key_bucket: the bucket of the escrowed keys (the backup bucket unless set apart).
    :param key_prefix: the prefix of the escrowed keys.
    :param kms_key_id: the SSE-KMS key; None for SSE-S3.
    """

    bucket: str
    prefix: str
    key_bucket: str
    key_prefix: str
    kms_key_id: str | None

    @classmethod
    def validate(
        cls,
        *,
        bucket: Any,
        prefix: Any,
        key_bucket: Any = None,
        key_prefix: Any = DEFAULT_KEY_PREFIX,
        kms_key_id: Any = None,
    ) -> StoreSettings:
        """Check rendered settings; a bad or missing one raises, naming what to set (no retries).

        :param bucket: the ``bucket`` Param (see :func:`require_bucket`).
        :param prefix: the ``prefix`` Param.
        :param key_bucket: the ``key_bucket`` Param; empty for the backup bucket.
        :param key_prefix: the ``key_prefix`` Param.
        :param kms_key_id: the ``kms_key_id`` Param; empty for SSE-S3.
        """
        backups = require_bucket(bucket)
        return cls(
            bucket=backups,
            prefix=validate_prefix(str(prefix)),
            key_bucket=require_bucket(key_bucket) if key_bucket else backups,
            key_prefix=validate_prefix(str(key_prefix)),
            kms_key_id=str(kms_key_id) if kms_key_id else None,
        )


@dataclass(frozen=True)
class ReplicaSettings:
    """Where every published backup is copied: a second bucket, in another region, with its own
    connection and KMS key (build it with :meth:`validate`; None when no replica is set).

    :param bucket: the replica bucket (snapshots, manifests and escrowed keys, at the primary's keys).
    :param aws_conn_id: its AWS connection (its region is the connection's).
    :param kms_key_id: its SSE-KMS key; None for SSE-S3.
    """

    bucket: str
    aws_conn_id: str
    kms_key_id: str | None

    @classmethod
    def validate(
        cls, *, store: StoreSettings, bucket: Any, aws_conn_id: Any, kms_key_id: Any, default_conn_id: str
    ) -> ReplicaSettings | None:
        """Check the rendered replica Params; None when ``bucket`` is empty (no replica).

        :param store: the primary's settings (the replica must be another bucket).
        :param bucket: the ``replica_bucket`` Param.
        :param aws_conn_id: the ``replica_aws_conn_id`` Param; empty for ``default_conn_id``.
        :param kms_key_id: the ``replica_kms_key_id`` Param; empty for SSE-S3.
        :param default_conn_id: the primary's connection.
        """
        if not bucket:
            return None
        if not re.fullmatch(_BUCKET_PATTERN, str(bucket)):
            raise ConfigurationError(f"replica_bucket {bucket!r} is not a valid S3 bucket name")
        if str(bucket) in (store.bucket, store.key_bucket):
            raise ConfigurationError(
                f"replica_bucket {bucket!r} is the backup or key bucket: a replica is a second bucket "
                "(in another region); set another one, or leave replica_bucket empty"
            )
        return cls(
            bucket=str(bucket),
            aws_conn_id=str(aws_conn_id) if aws_conn_id else default_conn_id,
            kms_key_id=str(kms_key_id) if kms_key_id else None,
        )


def replica(kms: bool = True) -> dict[str, Param]:
    """``replica_bucket``, ``replica_aws_conn_id``, ``replica_kms_key_id``: the second copy (or none).

    :param kms: with ``replica_kms_key_id`` (the DAGs that write to the replica).
    """
    bucket = os.environ.get(REPLICA_BUCKET_ENV, "").strip()
    found = {
        "replica_bucket": param(
            bucket if re.fullmatch(_BUCKET_PATTERN, bucket) and bucket else None,
            type=["null", "string"],
            maxLength=63,
            pattern=_BUCKET_PATTERN,
            description="Second bucket (another region) every published backup is copied to: snapshot, "
            f"escrowed keys, manifest last (default: env {REPLICA_BUCKET_ENV}; empty: no replica).",
        ),
        "replica_aws_conn_id": param(
            os.environ.get(REPLICA_AWS_CONN_ID_ENV, "").strip() or None,
            type=["null", "string"],
            description="AWS connection of the replica bucket; its region is the connection's (default: "
            f"env {REPLICA_AWS_CONN_ID_ENV}; empty: aws_conn_id).",
        ),
        "replica_kms_key_id": param(
            os.environ.get(REPLICA_KMS_KEY_ID_ENV, "").strip() or None,
            type=["null", "string"],
            maxLength=2048,
            description="KMS key (of the replica's region) for SSE-KMS in the replica; empty uses SSE-S3 "
            f"(default: env {REPLICA_KMS_KEY_ID_ENV}).",
        ),
    }
    if not kms:
        del found["replica_kms_key_id"]
    return found


def source_bucket() -> dict[str, Param]:
    """``source_bucket``: which copy a restore or drill reads, the primary or the replica."""
    return {
        "source_bucket": param(
            "primary",
            type="string",
            enum=["primary", "replica"],
            description="Read the backup from the primary bucket, or from replica_bucket with "
            "replica_aws_conn_id (when the primary's region is down). A manifest URI in source names its "
            "bucket itself: give the replica's with replica.",
        )
    }


# (environment variable, default) of each DAG's schedule.
BACKUP_SCHEDULE = ("HCP_ETCD_BACKUP_SCHEDULE", "0 2 * * *")
# Online backups between the nightly quiesced ones; off the quiesced hour so they rarely meet.
ONLINE_SCHEDULE = ("HCP_ETCD_ONLINE_SCHEDULE", "0 */4 * * *")
DRILL_SCHEDULE = ("HCP_ETCD_DRILL_SCHEDULE", "0 4 * * 0")
# Set to an empty value, these mean "no schedule" instead of the default: the online backups are an
# addition to the nightly ones, which must never be turned off by a blank line in a deployment.
SCHEDULES_THAT_MAY_BE_OFF = frozenset({ONLINE_SCHEDULE[0]})


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
    retry_delay, _ = env_retry_delay()
    return {"retries": 2, "retry_delay": retry_delay, "on_failure_callback": failure_callbacks(), **extra}


def hosted_clusters(description: str) -> Param:
    """``hosted_clusters``: a list of ``namespace/name``.

    :param description: what the list is for in this DAG.
    """
    return param(
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
    return param(default, type="string", maxLength=1024, description=description)


def storage(key_prefix_description: str) -> dict[str, Param]:
    """``bucket``, ``prefix`` and ``key_prefix``: where backups and escrowed keys are.

    :param key_prefix_description: what the key prefix means in this DAG.
    """
    bucket, problem = env_bucket()
    return {
        "bucket": param(
            bucket,
            type="string",
            maxLength=63,
            pattern=_BUCKET_PATTERN,
            description="S3 bucket of the backups (default: env HCP_ETCD_BUCKET; required)."
            + (f" Ignored: {problem}." if problem else ""),
        ),
        "prefix": param(
            DEFAULT_PREFIX,
            type="string",
            pattern=S3_PREFIX_PATTERN,
            maxLength=512,
            description="Key prefix of the backups: {prefix}/{ns}/{name}/{YYYYmmddTHHMMSSZ}/snapshot.db "
            "and manifest.json.",
        ),
        "key_prefix": param(
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
        "url_expiry_hours": param(
            4,
            type="integer",
            minimum=1,
            maximum=url_expiry_max_hours,
            description=f"Lifetime of the presigned snapshot URL (SigV4: at most {url_expiry_max_hours} h).",
        ),
        "wait_timeout_minutes": param(
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
        "kubernetes_conn_id": param(
            env_text("HCP_ETCD_KUBERNETES_CONN_ID", "kubernetes_default"),
            type="string",
            minLength=1,
            description="Kubernetes connection id (default: env HCP_ETCD_KUBERNETES_CONN_ID).",
        ),
        "aws_conn_id": param(
            env_text("HCP_ETCD_AWS_CONN_ID", "aws_default"),
            type="string",
            minLength=1,
            description="AWS connection id (default: env HCP_ETCD_AWS_CONN_ID).",
        ),
    }


def presign_connection() -> dict[str, Param]:
    """``presign_aws_conn_id``: the connection that signs ``restoreSnapshotURL`` (restore and drill)."""
    return {
        "presign_aws_conn_id": param(
            os.environ.get("HCP_ETCD_PRESIGN_AWS_CONN_ID", "").strip() or None,
            type=["null", "string"],
            description="AWS connection that presigns the snapshot URL for etcd-init (default: env "
            "HCP_ETCD_PRESIGN_AWS_CONN_ID; empty: aws_conn_id). Role credentials add a session token "
            "that makes the URL longer than HyperShift's 1024 characters: use an IAM user's long-term "
            "keys limited to reading snapshots (include/aws/presign-user.json).",
        )
    }


# Operator arguments that every task of a DAG takes from its Params.
KUBERNETES = {"kubernetes_conn_id": ref("kubernetes_conn_id")}
STORE = {**KUBERNETES, "aws_conn_id": ref("aws_conn_id"), "bucket": ref("bucket"), "prefix": ref("prefix")}
# The copy a restore or drill reads (``source_bucket``): the primary's settings, or the replica's.
SOURCE_STORE = {
    **STORE,
    "bucket": "{{ params.replica_bucket if params.source_bucket == 'replica' else params.bucket }}",
    "aws_conn_id": "{{ (params.replica_aws_conn_id or params.aws_conn_id) "
    "if params.source_bucket == 'replica' else params.aws_conn_id }}",
}
