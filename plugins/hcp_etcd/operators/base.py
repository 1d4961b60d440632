"""Shared plumbing of the hcp-etcd operators."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, Context
from airflow.sdk.module_loading import import_string

from hcp_etcd.naming import ClusterRef
from hcp_etcd.params import DEFAULT_KEY_PREFIX, ReplicaSettings, StoreSettings

if TYPE_CHECKING:
    # The hooks pull in the kubernetes client, boto3 and the providers (seconds of imports): DAG files
    # import the operators at every parse, so the hooks are imported when a task first uses them.
    # Likewise the triggers' base (pydantic models of the event payloads): annotations only here.
    from airflow.triggers.base import BaseTrigger

    from hcp_etcd.hooks.hosted_cluster import HostedClusterHook
    from hcp_etcd.hooks.snapshot_store import SnapshotStoreHook


def utcnow() -> datetime:
    """Now, in UTC (one place to patch in tests)."""
    return datetime.now(UTC)


async def _first_event(trigger: BaseTrigger) -> dict[str, Any]:
    async for event in trigger.run():
        return event.payload
    raise RuntimeError(f"{type(trigger).__name__} ended without an event")


def run_trigger(trigger: BaseTrigger) -> dict[str, Any]:
    """Run a trigger in this process until its first event (a wait of seconds, not worth a deferral).

    :param trigger: the trigger.
    :return: the event's payload.
    """
    return asyncio.run(_first_event(trigger))


class HostedClusterOperator(BaseOperator):
    """Base for operators on the management cluster, most of them acting on one HostedCluster.

    The Kubernetes hook is named by a class attribute and built once per task (as the providers'
    ``aws_hook_class``): by its import path, because the hooks import the kubernetes client, boto3
    and the providers (seconds), and DAG files import the operators at every parse.

    :param hosted_cluster: ``namespace/name`` of the HostedCluster; None for a task acting on the
        fleet or on a cluster it learns at run time (a restore's target). (templated)
    :param kubernetes_conn_id: Kubernetes connection of the management cluster. (templated)
    :param deferrable: wait in the triggerer instead of holding a worker slot.
    """

    template_fields: tuple[str, ...] = ("hosted_cluster", "kubernetes_conn_id")
    ui_color = "#e8f1fb"
    k8s_hook_class: str = "hcp_etcd.hooks.hosted_cluster.HostedClusterHook"
    # How :meth:`wait` waits before it defers: subclasses whose waits usually end within seconds poll
    # in the worker first, for up to ``inline_wait_seconds``, every ``inline_poll_interval`` seconds.
    inline_wait_seconds: float = 0
    inline_poll_interval: float | None = None

    def __init__(
        self,
        *,
        hosted_cluster: str | None = None,
        kubernetes_conn_id: str = "kubernetes_default",
        deferrable: bool = True,
        **kwargs: Any,
    ) -> None:
        """See the class docstring.

        :param kwargs: BaseOperator arguments.
        """
        super().__init__(**kwargs)
        self.hosted_cluster = hosted_cluster
        self.kubernetes_conn_id = kubernetes_conn_id
        self.deferrable = deferrable

    @property
    def ref(self) -> ClusterRef:
        """The validated cluster reference."""
        if not self.hosted_cluster:
            raise ValueError(f"task {self.task_id} acts on no single HostedCluster (hosted_cluster is unset)")
        return ClusterRef.parse(str(self.hosted_cluster))

    @cached_property
    def k8s(self) -> HostedClusterHook:
        """The Kubernetes hook (``k8s_hook_class``), built once."""
        return self.build_k8s_hook()

    def build_k8s_hook(self) -> HostedClusterHook:
        """A new Kubernetes hook of ``k8s_hook_class`` on this task's connection."""
        return import_string(self.k8s_hook_class)(kubernetes_conn_id=self.kubernetes_conn_id)

    @staticmethod
    def run_id(context: Context) -> str:
        """The Airflow run id (lock owner, annotation owner).

        :param context: task context.
        """
        return str(context["run_id"])

    def run_dag_id(self, context: Context) -> str:
        """The id of the run's DAG (with the run id, the backup lock's owner: two DAGs' runs may
        share a run id).

        :param context: task context.
        """
        return str(getattr(context.get("dag"), "dag_id", None) or self.dag_id)

    def wait(
        self,
        trigger: BaseTrigger,
        method_name: str,
        context: Context,
        inline_seconds: float | None = None,
        inline_poll_interval: float | None = None,
        **kwargs: Any,
    ) -> Any:
        """Defer to ``trigger``, or run it in this process when not deferrable; then ``method_name``.

        :param trigger: the trigger.
        :param method_name: the method resumed with ``event``.
        :param context: task context.
        :param inline_seconds: first poll in this process for up to this long (default: the class's
            ``inline_wait_seconds``), and defer only if the
            wait is not over by then. A deferral costs two hand-offs (worker -> triggerer -> scheduler ->
            a new worker process): for waits of a few seconds inside the API downtime window that is
            most of the window (measured in BENCHMARKS.md, figure 1).
        :param inline_poll_interval: the trigger's ``poll_interval`` while polling in this process
            (a worker slot is held anyway, so polling it faster costs only a few more reads); the
            deferred trigger keeps its own (default: the class's ``inline_poll_interval``).
        :param kwargs: passed to the method.
        """
        if inline_seconds is None:
            inline_seconds = self.inline_wait_seconds
        if inline_poll_interval is None:
            inline_poll_interval = self.inline_poll_interval
        if self.deferrable and inline_seconds > 0:
            probe = trigger
            if inline_poll_interval is not None:
                _, trigger_kwargs = trigger.serialize()
                probe = type(trigger)(**{**trigger_kwargs, "poll_interval": inline_poll_interval})
            try:
                event = asyncio.run(asyncio.wait_for(_first_event(probe), inline_seconds))
            except TimeoutError:
                event = None
            # "failed" is final too (the triggers' contract): no deferral to learn it again.
            if event is not None and event.get("status") in ("success", "failed"):
                return getattr(self, method_name)(context, event=event, **kwargs)
        if self.deferrable:
            self.defer(trigger=trigger, method_name=method_name, kwargs=kwargs)
        return getattr(self, method_name)(context, event=run_trigger(trigger), **kwargs)


class StoreOperator(HostedClusterOperator):
    """The S3 operator: base of the steps that read or write the backup bucket (and the key bucket).

    :param bucket: the backup bucket. (templated)
    :param prefix: key prefix of snapshots and manifests. (templated)
    :param aws_conn_id: AWS connection. (templated)
    :param kms_key_id: SSE-KMS key; SSE-S3 when empty. (templated)
    """

    template_fields: tuple[str, ...] = (
        *HostedClusterOperator.template_fields,
        "bucket",
        "prefix",
        "aws_conn_id",
        "kms_key_id",
    )
    ui_color = "#dff3e4"
    s3_hook_class: str = "hcp_etcd.hooks.snapshot_store.SnapshotStoreHook"
    # Where the escrowed keys are: operators that take them as arguments set them; the rest keep these.
    key_bucket: str | None = None
    key_prefix: str = DEFAULT_KEY_PREFIX
    # The replica (a second bucket with its own connection and KMS key): operators that act on both
    # copies take these as arguments; the rest keep None (no replica).
    replica_bucket: str | None = None
    replica_aws_conn_id: str | None = None
    replica_kms_key_id: str | None = None

    def __init__(
        self,
        *,
        bucket: str,
        prefix: str = "hcp-etcd",
        aws_conn_id: str = "aws_default",
        kms_key_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        """See the class docstring.

        :param kwargs: HostedClusterOperator arguments.
        """
        super().__init__(**kwargs)
        self.bucket = bucket
        self.prefix = prefix
        self.aws_conn_id = aws_conn_id
        self.kms_key_id = kms_key_id

    @cached_property
    def s3(self) -> SnapshotStoreHook:
        """The S3 hook (``s3_hook_class`` with :meth:`s3_hook_parameters`), built once."""
        return import_string(self.s3_hook_class)(**self.s3_hook_parameters())

    def s3_hook_parameters(self) -> dict[str, Any]:
        """Arguments of the S3 hook (a subclass adds its own, e.g. a part size)."""
        return {"aws_conn_id": self.aws_conn_id}

    @cached_property
    def store(self) -> StoreSettings:
        """The rendered S3 settings, validated once per task (read it in ``execute``, after templating).

        A missing or bad bucket raises ``ConfigurationError`` naming what to set; a bad prefix,
        ``InvalidNameError``: configuration errors, not retried.
        """
        return StoreSettings.validate(
            bucket=self.bucket,
            prefix=self.prefix,
            key_bucket=self.key_bucket,
            key_prefix=self.key_prefix,
            kms_key_id=self.kms_key_id,
        )

    @cached_property
    def replica(self) -> ReplicaSettings | None:
        """The rendered replica settings, validated once (None: no replica)."""
        return ReplicaSettings.validate(
            store=self.store,
            bucket=self.replica_bucket,
            aws_conn_id=self.replica_aws_conn_id,
            kms_key_id=self.replica_kms_key_id,
            default_conn_id=str(self.aws_conn_id),
        )

    @cached_property
    def replica_store(self) -> StoreSettings | None:
        """The replica as a backup location of its own: its bucket holds backups and keys alike."""
        replica = self.replica
        if replica is None:
            return None
        store = self.store
        return StoreSettings(
            replica.bucket, store.prefix, replica.bucket, store.key_prefix, replica.kms_key_id
        )

    @cached_property
    def replica_s3(self) -> SnapshotStoreHook:
        """The S3 hook on the replica's connection (only when :attr:`replica` is set)."""
        if self.replica is None:
            raise ValueError(f"task {self.task_id} has no replica_bucket")
        parameters = {**self.s3_hook_parameters(), "aws_conn_id": self.replica.aws_conn_id}
        return import_string(self.s3_hook_class)(**parameters)

    @property
    def kms(self) -> str | None:
        """The SSE-KMS key id (of :attr:`store`), None for SSE-S3."""
        return self.store.kms_key_id


def deadline(minutes: float | str) -> datetime:
    """Now + ``minutes`` (the dead-man's switch).

    Fractions are accepted (``0.25`` = 15 s) so tests can watch a deadline pass; the DAG's
    ``pause_deadline_minutes`` Param stays an integer of at least 10.

    :param minutes: minutes from now.
    """
    return utcnow() + timedelta(minutes=float(minutes))
