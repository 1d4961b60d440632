"""The steps of a backup of one HostedCluster (DESIGN §4, issue 4), one operator each."""

from __future__ import annotations

import base64
import hashlib
import shlex
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowSkipException, TaskDeferred
from airflow.sdk.log import mask_secret
from airflow.sdk.module_loading import import_string

from hcp_etcd import aescbc, etcd, sakey
from hcp_etcd.encryption import (
    KMS,
    EscrowedKey,
    data_hash_mismatch,
    encryption_type,
    key_references,
    kms_record,
    restore_keys,
)
from hcp_etcd.errors import ConfigurationError, fail_fast_on_configuration_errors
from hcp_etcd.naming import (
    API_SERVER_DEPLOYMENTS,
    ETCD_CONTAINER,
    LOCK_ANNOTATION,
    ORIGINAL_REPLICAS_ANNOTATION,
    PREVIOUS_PAUSE_ANNOTATION,
    ClusterRef,
    encryption_key_key,
    format_backup_ts,
    parse_rfc3339,
    rfc3339,
    service_account_key_key,
)
from hcp_etcd.operators.base import HostedClusterOperator, StoreOperator, deadline, utcnow
from hcp_etcd.operators.kubernetes import ExecInEachError, KubernetesExecOperator
from hcp_etcd.operators.patch import HostedClusterPatchOperator
from hcp_etcd.state import (
    BackupLock,
    LockHeldError,
    OriginalReplicas,
    check_lock,
    paused_by_someone_else,
    previous_pause_annotation,
    read_previous_pause,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from hcp_etcd.hooks.hosted_cluster import HostedClusterHook
    from hcp_etcd.triggers.wait import PodsGoneTrigger

MODES = ("quiesced", "online")
# Replica counts HyperShift uses per availability policy: the fallback when a retry finds 0.
DEFAULT_REPLICAS = {"HighlyAvailable": 3, "SingleReplica": 1}


def _mode(value: str) -> str:
    if value not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {value!r}")
    return value


def read_escrow_keys(k8s: HostedClusterHook, ref: ClusterRef, hc: dict[str, Any]) -> dict[str, bytes]:
    """The raw key of every Secret the HostedCluster's AES-CBC references name, by Secret name.

    Each is masked in the task log at once; the caller keeps them local. Raises with what to fix on
    an unreadable Secret, a Secret without ``data.key``, or a status reference whose Secret no longer
    holds the key the status recorded (``dataHash``). A ``type: kms`` cluster has none (its ARNs
    are checked instead: :func:`hcp_etcd.encryption.kms_record`).

    :param k8s: the Kubernetes hook.
    :param ref: the HostedCluster.
    :param hc: the HostedCluster as read.
    """
    from kubernetes.client.rest import ApiException

    keys: dict[str, bytes] = {}
    if encryption_type(hc) == KMS:
        kms_record(hc)  # raises on a KMS cluster this project cannot back up (not AWS, no key)
        return keys
    for kref in key_references(hc):
        if kref.secret not in keys:
            try:
                data = k8s.read_secret_data(ref.namespace, kref.secret)
            except ApiException as err:
                raise RuntimeError(
                    f"encryption key Secret {ref.namespace}/{kref.secret} ({kref.role}) of {ref} is "
                    f"unreadable: {err.status} {err.reason}"
                ) from err
            encoded = data.get("key")
            if not encoded:
                raise RuntimeError(
                    f"Secret {ref.namespace}/{kref.secret} ({kref.role}) of {ref} has no data.key"
                )
            mask_secret(encoded)
            keys[kref.secret] = base64.b64decode(encoded)
            del data, encoded
        problem = data_hash_mismatch(kref, hashlib.sha256(keys[kref.secret]).hexdigest())
        if problem:
            raise RuntimeError(f"{ref}: {problem}")
    return keys


def _annotations(hc: dict[str, Any]) -> dict[str, str]:
    return dict((hc.get("metadata") or {}).get("annotations") or {})


# Quiesce and resume wait for pods inside the API downtime window: poll in the worker first (a few
# seconds normally, every 0.25 s: each poll is one list or get), defer only after this long.
INLINE_WAIT_SECONDS = 60
INLINE_POLL_SECONDS = 0.25


def stop_api_servers(
    op: HostedClusterOperator, ns: str, deployments: Sequence[str], timeout: float, poll_interval: float
) -> PodsGoneTrigger:
    """Scale API-server Deployments to 0; return the trigger that waits until their pods are gone.

    The one scale-down of the quiesce and of a snapshot retry that finds them up again.

    :param op: the task (its hook, connection and log).
    :param ns: the control-plane namespace.
    :param deployments: the Deployments.
    :param timeout: seconds the wait may take.
    :param poll_interval: seconds between the trigger's polls.
    """
    from hcp_etcd.triggers.wait import PodsGoneTrigger

    selectors = []
    for dep in deployments:
        selectors.append(op.k8s.get_deployment_selector(ns, dep))
        op.k8s.scale_deployment(ns, dep, 0)
        op.log.info("scaled %s/%s to 0", ns, dep)
    return PodsGoneTrigger(
        namespace=ns,
        label_selectors=selectors,
        kubernetes_conn_id=op.kubernetes_conn_id,
        timeout=timeout,
        poll_interval=poll_interval,
    )


class BackupPreflightOperator(KubernetesExecOperator, StoreOperator):
    """Check that a backup can run, before anything changes (the member checks run in the pods).

    Checks: the cluster exists; every encryption key Secret its spec and status reference has ``key``
    (and a status reference's Secret still the key the status recorded); no other run holds the lock;
    (quiesced) nobody else paused it and the API-server Deployments exist; every etcd member is
    running, has a leader, reports no alarm, and has room on its volume for a snapshot; the backup
    bucket and the key bucket take writes with the server-side encryption the run will use (a probe
    object each, deleted at once; read-only ``head`` when ``dry_run``).

    A configuration error (a missing or unwritable bucket, an unknown connection, a HostedCluster
    that does not exist, a bad name) fails the task at once, without retries.

    :param mode: ``quiesced`` or ``online``. (templated)
    :param dry_run: skip everything downstream once the checks passed. (templated)
    :param key_prefix: prefix of the escrowed keys (probed in the key bucket). (templated)
    :param key_bucket: bucket of the keys (default: ``bucket``). (templated)
    :param snapshot_path: where snapshots are written in the etcd container.
    :param space_factor: free space required, as a multiple of the member's db size.
    """

    template_fields: tuple[str, ...] = (
        *StoreOperator.template_fields,
        "mode",
        "dry_run",
        "key_prefix",
        "key_bucket",
    )

    def __init__(
        self,
        *,
        mode: str = "quiesced",
        dry_run: bool | str = False,
        key_prefix: str = "hcp-etcd-keys",
        key_bucket: str | None = None,
        snapshot_path: str = etcd.DEFAULT_SNAPSHOT_PATH,
        space_factor: float = 1.2,
        **kwargs: Any,
    ) -> None:
        """See the class docstring."""
        super().__init__(**kwargs)
        self.mode = mode
        self.dry_run = dry_run
        self.key_prefix = key_prefix
        self.key_bucket = key_bucket
        self.snapshot_path = snapshot_path
        self.space_factor = space_factor

    @fail_fast_on_configuration_errors
    def execute(self, context: Context) -> dict[str, Any]:
        """Run the checks; raise with what to do on the first failure."""
        from kubernetes.client.rest import ApiException

        ref, mode, store = self.ref, _mode(str(self.mode)), self.store
        bucket, key_bucket = store.bucket, store.key_bucket
        try:
            hc = self.k8s.get_hosted_cluster(ref)
        except ApiException as err:
            if err.status == 404:
                raise ConfigurationError(
                    f"HostedCluster {ref} does not exist (check namespace/name)"
                ) from err
            raise
        annotations = _annotations(hc)
        try:
            check_lock(annotations, self.run_id(context), utcnow(), str(ref), self.dag_id)
        except LockHeldError as err:
            if mode == "online":
                # The holder is backing this cluster up now (or died, and failed its run): an online
                # backup taken beside it adds nothing, and failing would page for a non-event.
                raise AirflowSkipException(f"{err} Online backup of {ref} skipped this time.") from err
            raise
        if mode == "quiesced" and paused_by_someone_else(
            hc.get("spec") or {}, annotations, self.run_id(context), utcnow()
        ):
            raise RuntimeError(
                f"HostedCluster {ref} is already paused (spec.pausedUntil={hc['spec']['pausedUntil']!r}) by "
                "someone else: a quiesced backup would unpause it at the end. Unpause it first, or run "
                "with mode=online."
            )
        # Every key spec and status reference (a rotation in progress references two).
        keys = read_escrow_keys(self.k8s, ref, hc)
        del keys
        ns = ref.control_plane_namespace
        if mode == "quiesced":
            for dep in API_SERVER_DEPLOYMENTS:
                try:
                    self.k8s.get_deployment_replicas(ns, dep)
                except ApiException as err:
                    raise RuntimeError(
                        f"Deployment {ns}/{dep} of {ref} is unreadable: {err.status} {err.reason}"
                    ) from err
        members = self.k8s.list_etcd_pods(ns)
        if not members:
            raise RuntimeError(
                f"no etcd pods (label app=etcd) in {ns}: is {ref} a hosted cluster with managed etcd?"
            )
        for pod in members:
            self._check_member(ns, pod, ref)
        # Both buckets, as the run will write them (its SSE settings), before anything is paused: a
        # key bucket that refuses the key would otherwise fail only at escrow_key, after the downtime.
        for target, prefix in {(bucket, store.prefix), (key_bucket, store.key_prefix)}:
            if self.dry_run in (True, "True", "true"):
                # A listing of the prefix, not HeadBucket: the shipped policy lets the backup list its
                # prefixes only (include/aws/backup-role.json), and HeadBucket needs the whole bucket.
                self.s3.client.list_objects_v2(Bucket=target, Prefix=f"{prefix.strip('/')}/", MaxKeys=1)
                continue
            probe = f"{prefix.strip('/')}/.probe/{ref.namespace}/{ref.name}/{self.run_id(context)}"
            self.s3.check_writable(target, probe.replace(":", "_").replace("+", "_"), self.kms)
        self.log.info("preflight of %s passed: members %s, mode %s", ref, members, mode)
        if self.dry_run in (True, "True", "true"):
            raise AirflowSkipException(f"dry run: preflight of {ref} passed; nothing was changed")
        return {"cluster": str(ref), "control_plane_namespace": ns, "members": members, "mode": mode}

    def _check_member(self, ns: str, pod: str, ref: ClusterRef) -> None:
        if not self.k8s.pod_is_running(ns, pod, ETCD_CONTAINER):
            raise RuntimeError(f"etcd member {ns}/{pod} of {ref} is not running: fix etcd before backing up")
        status = etcd.parse_endpoint_status(
            self.exec_in_pod(ns, pod, etcd.endpoint_status_command(), timeout=60).stdout
        )
        if not status.has_leader or status.errors:
            raise RuntimeError(
                f"etcd member {ns}/{pod} of {ref} is unhealthy "
                f"(leader={status.leader}, errors={status.errors})"
            )
        free = etcd.parse_df_available_bytes(
            self.exec_in_pod(ns, pod, etcd.free_bytes_command(), timeout=60).stdout
        )
        need = int(status.db_size * self.space_factor) + 16 * 1024 * 1024
        if free < need:
            raise RuntimeError(
                f"etcd member {ns}/{pod} of {ref} has {free // 2**20} MiB free on {etcd.DATA_VOLUME}, "
                f"a snapshot "
                f"needs about {need // 2**20} MiB (db size {status.db_size // 2**20} MiB): grow PVC "
                f"data-{pod} or defragment etcd first"
            )
        self.log.info(
            "member %s: etcd %s, revision %s, db %s bytes, %s bytes free",
            pod,
            status.version,
            status.revision,
            status.db_size,
            free,
        )


class PauseNotSeen(RuntimeError):
    """HyperShift did not report the pause in time (the pause was undone before this was raised)."""


class PauseReconciliationOperator(HostedClusterPatchOperator):
    """Take the backup lock and (quiesced) pause reconciliation until a deadline, atomically.

    One conditional merge patch (``resourceVersion``) sets the lock annotation, records the previous
    ``spec.pausedUntil`` and sets ``pausedUntil`` to now + ``pause_deadline_minutes``: the deadline
    is a dead-man's switch, HyperShift resumes by itself if Airflow dies. If the pause is not seen
    (``ReconciliationActive`` not False) in time, the patch is undone before failing, because the
    unpause teardown is skipped when this setup fails.

    The confirmation polls in the worker for a few seconds (HyperShift flips the condition within a
    reconcile loop), then defers (``ReconciliationPausedTrigger``).

    :param mode: ``quiesced`` or ``online`` (online only takes the lock). (templated)
    :param pause_deadline_minutes: the dead-man's switch; fractions allowed (tests). (templated)
    :param confirm_timeout: seconds to wait for ReconciliationActive=False.
    :return: ``{"previous_paused_until", "paused_until", "lock_expires_at"}``.
    """

    template_fields: tuple[str, ...] = (
        *HostedClusterOperator.template_fields,
        "mode",
        "pause_deadline_minutes",
    )
    inline_wait_seconds = 10
    inline_poll_interval = 0.5

    def __init__(
        self,
        *,
        mode: str = "quiesced",
        pause_deadline_minutes: float | str = 60,
        confirm_timeout: float = 120,
        **kwargs: Any,
    ) -> None:
        """See the class docstring."""
        super().__init__(**kwargs)
        self.mode = mode
        self.pause_deadline_minutes = pause_deadline_minutes
        self.confirm_timeout = confirm_timeout

    def execute(self, context: Context) -> dict[str, Any]:
        """Lock (and pause) in one conditional patch, then confirm."""
        from kubernetes.client.rest import ApiException

        ref, mode, run_id = self.ref, _mode(str(self.mode)), self.run_id(context)
        until = deadline(self.pause_deadline_minutes)
        hc = self.k8s.get_hosted_cluster(ref)
        annotations = _annotations(hc)
        state = check_lock(annotations, run_id, utcnow(), str(ref), self.dag_id)
        if state == "expired":
            self.log.warning("taking over the expired lock of %s: %s", ref, annotations.get(LOCK_ANNOTATION))
        recorded, previous = read_previous_pause(annotations, run_id)
        if not recorded:
            # A retry of this run must not record its own pause as "previous".
            previous = (hc.get("spec") or {}).get("pausedUntil")
            dead = BackupLock.from_annotations(annotations) if state == "expired" else None
            dead_recorded, dead_previous = read_previous_pause(annotations, dead.run_id if dead else "")
            if dead_recorded:
                # The expired run's deadline is not the cluster's own setting: restore what it found.
                previous = dead_previous
        lock = BackupLock(run_id, self.dag_id, until)
        patch: dict[str, Any] = {"metadata": {"annotations": {LOCK_ANNOTATION: lock.to_annotation()}}}
        if mode == "quiesced":
            patch["metadata"]["annotations"][PREVIOUS_PAUSE_ANNOTATION] = previous_pause_annotation(
                run_id, previous
            )
            patch["spec"] = {"pausedUntil": rfc3339(until)}
        try:
            self.apply_patch(patch, current=hc, resource_version=hc["metadata"]["resourceVersion"])
        except ApiException as err:
            if err.status == 409:
                raise RuntimeError(
                    f"HostedCluster {ref} changed while taking the backup lock (another run?); "
                    "the task retry will re-check the lock"
                ) from err
            raise
        self.log.info(
            "lock on %s taken until %s%s",
            ref,
            rfc3339(until),
            f"; reconciliation paused (was {previous!r})" if mode == "quiesced" else "",
        )
        result = {
            "previous_paused_until": previous,
            "paused_until": rfc3339(until),
            "lock_expires_at": rfc3339(until),
        }
        if mode != "quiesced":
            return result
        from hcp_etcd.triggers.wait import ReconciliationPausedTrigger

        trigger = ReconciliationPausedTrigger(
            namespace=ref.namespace,
            name=ref.name,
            kubernetes_conn_id=self.kubernetes_conn_id,
            timeout=self.confirm_timeout,
            poll_interval=2,
        )
        try:
            return self.wait(trigger, "execute_complete", context, result=result)
        except (TaskDeferred, PauseNotSeen):
            raise
        except Exception:
            # The unpause teardown is skipped when this setup fails: undo before failing.
            self._undo(ref, run_id, previous)
            raise

    def execute_complete(
        self, context: Context, event: dict[str, Any], result: dict[str, Any]
    ) -> dict[str, Any]:
        """The pause is seen, or undone before failing.

        :param context: task context.
        :param event: the trigger's payload.
        :param result: what :meth:`execute` will have returned.
        """
        if event.get("status") == "success":
            self.log.info("reconciliation of %s paused (seen after %.1fs)", self.ref, event.get("elapsed", 0))
            return result
        self._undo(self.ref, self.run_id(context), result["previous_paused_until"])
        raise PauseNotSeen(
            f"HostedCluster {self.ref} still reconciles after pausing ({event.get('message')}): "
            "is the HyperShift operator running?"
        )

    def _undo(self, ref: ClusterRef, run_id: str, previous: str | None) -> None:
        self.log.warning("undoing the pause of %s before failing", ref)
        self.apply_patch(
            {
                "spec": {"pausedUntil": previous},
                "metadata": {"annotations": {LOCK_ANNOTATION: None, PREVIOUS_PAUSE_ANNOTATION: None}},
            }
        )


class QuiesceApiServersOperator(HostedClusterPatchOperator):
    """Stop every etcd writer: scale the API-server Deployments to 0 and wait until their pods are gone.

    The replicas found are written to the HostedCluster (annotation) before the first scale-down;
    a retry reads them back, so it never records 0. If scaling or waiting fails, the Deployments
    are scaled back before failing (the resume teardown is skipped when this setup fails).

    :param mode: ``quiesced`` or ``online`` (online does nothing). (templated)
    :param deployments: the Deployments to stop.
    :param timeout: seconds to wait for the pods to go.
    :return: ``{"replicas", "scaled_down_at"}``.
    """

    template_fields: tuple[str, ...] = (*HostedClusterOperator.template_fields, "mode")
    inline_wait_seconds = INLINE_WAIT_SECONDS
    inline_poll_interval = INLINE_POLL_SECONDS

    def __init__(
        self,
        *,
        mode: str = "quiesced",
        deployments: tuple[str, ...] = API_SERVER_DEPLOYMENTS,
        timeout: float = 600,
        **kwargs: Any,
    ) -> None:
        """See the class docstring."""
        super().__init__(**kwargs)
        self.mode = mode
        self.deployments = deployments
        self.timeout = timeout

    def execute(self, context: Context) -> dict[str, Any] | None:
        """Record, scale down, defer until the pods are gone."""

        if _mode(str(self.mode)) == "online":
            self.log.info("online mode: API servers keep running")
            return None
        ref, run_id = self.ref, self.run_id(context)
        ns = ref.control_plane_namespace
        hc = self.k8s.get_hosted_cluster(ref)
        record = OriginalReplicas.from_annotations(_annotations(hc), run_id)
        if record is None:
            record = OriginalReplicas(run_id, self._current_replicas(hc, ns), utcnow())
            self.apply_patch(
                {"metadata": {"annotations": {ORIGINAL_REPLICAS_ANNOTATION: record.to_annotation()}}},
                current=hc,
            )
            self.log.info("recorded original replicas of %s: %s", ref, record.replicas)
        else:
            self.log.info("retry: original replicas of %s recorded earlier: %s", ref, record.replicas)
        try:
            trigger = stop_api_servers(self, ns, self.deployments, self.timeout, poll_interval=1)
        except Exception:
            self._undo(ref, record)
            raise
        return self.wait(trigger, "execute_complete", context)

    def _current_replicas(self, hc: dict[str, Any], ns: str) -> dict[str, int]:
        policy = (hc.get("spec") or {}).get("controllerAvailabilityPolicy", "HighlyAvailable")
        fallback = DEFAULT_REPLICAS.get(policy, 1)
        replicas = {}
        for dep in self.deployments:
            want, _ = self.k8s.get_deployment_replicas(ns, dep)
            if want == 0:
                # Someone (a dead run?) left it at 0: record what HyperShift would run, never 0.
                self.log.warning("%s/%s is at 0 replicas; recording %s (%s)", ns, dep, fallback, policy)
                want = fallback
            replicas[dep] = want
        return replicas

    def _undo(self, ref: ClusterRef, record: OriginalReplicas) -> None:
        self.log.warning("undoing the scale-down of %s before failing", ref)
        for dep, n in record.replicas.items():
            self.k8s.scale_deployment(ref.control_plane_namespace, dep, n)
        self.apply_patch({"metadata": {"annotations": {ORIGINAL_REPLICAS_ANNOTATION: None}}})

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Resume after the wait; undo and fail on timeout."""
        ref = self.ref
        record = OriginalReplicas.from_annotations(
            _annotations(self.k8s.get_hosted_cluster(ref)), self.run_id(context)
        )
        if event.get("status") != "success":
            if record:
                self._undo(ref, record)
            raise RuntimeError(
                f"API servers of {ref} did not stop within {self.timeout:.0f}s: {event.get('message')}"
            )
        if record is None:
            raise RuntimeError(f"the original-replicas annotation of {ref} vanished during the quiesce")
        self.log.info("API servers of %s stopped after %.1fs", ref, event.get("elapsed", 0))
        return {"replicas": record.replicas, "scaled_down_at": rfc3339(record.scaled_down_at)}


class ResumeApiServersOperator(HostedClusterPatchOperator):
    """Scale the API servers back to the recorded replicas and wait until they are ready.

    The teardown of the quiesce: the safety net of the snapshot task, which gives them back itself
    (a failed snapshot leaves them at 0). Measures the API downtime, up to when the snapshot task saw
    them ready if it did, and clears the record.

    :param snapshot: the snapshot task's result (its ``api_available_at``); None when it failed.
        (templated)

    :param mode: ``quiesced`` or ``online`` (online does nothing). (templated)
    :param timeout: seconds to wait for the Deployments to be ready.
    :return: ``{"api_available_at", "api_downtime_seconds"}``.
    """

    template_fields: tuple[str, ...] = (*HostedClusterOperator.template_fields, "mode", "snapshot")
    inline_wait_seconds = INLINE_WAIT_SECONDS
    inline_poll_interval = INLINE_POLL_SECONDS

    def __init__(
        self, *, mode: str = "quiesced", snapshot: Any = None, timeout: float = 900, **kwargs: Any
    ) -> None:
        """See the class docstring."""
        super().__init__(**kwargs)
        self.mode = mode
        self.snapshot = snapshot
        self.timeout = timeout

    def execute(self, context: Context) -> dict[str, Any] | None:
        """Scale back, defer until ready."""
        from hcp_etcd.triggers.wait import DeploymentsReadyTrigger

        if _mode(str(self.mode)) == "online":
            return {"api_available_at": None, "api_downtime_seconds": None}
        ref = self.ref
        record = OriginalReplicas.from_annotations(
            _annotations(self.k8s.get_hosted_cluster(ref)), self.run_id(context)
        )
        if record is None:
            self.log.warning("no original replicas recorded by this run on %s: nothing to resume", ref)
            return {"api_available_at": None, "api_downtime_seconds": None}
        for dep, n in record.replicas.items():
            self.k8s.scale_deployment(ref.control_plane_namespace, dep, n)
            self.log.info("scaled %s/%s back to %s", ref.control_plane_namespace, dep, n)
        trigger = DeploymentsReadyTrigger(
            namespace=ref.control_plane_namespace,
            deployments=list(record.replicas),
            kubernetes_conn_id=self.kubernetes_conn_id,
            timeout=self.timeout,
            poll_interval=1,
        )
        return self.wait(trigger, "execute_complete", context)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Measure the downtime, drop the annotation."""
        ref = self.ref
        if event.get("status") != "success":
            raise RuntimeError(
                f"API servers of {ref} not ready {self.timeout:.0f}s after scaling back: "
                f"{event.get('message')}. HyperShift restores them at the latest when the "
                "pause deadline passes; check the Deployments in "
                f"{ref.control_plane_namespace}"
            )
        now = utcnow()
        record = OriginalReplicas.from_annotations(
            _annotations(self.k8s.get_hosted_cluster(ref)), self.run_id(context)
        )
        # The snapshot task saw the API servers ready when it gave them back; this task started later.
        seen = (self.snapshot or {}).get("api_available_at") if isinstance(self.snapshot, dict) else None
        if seen:
            now = parse_rfc3339(seen)
        downtime = (now - record.scaled_down_at).total_seconds() if record else None
        self.apply_patch({"metadata": {"annotations": {ORIGINAL_REPLICAS_ANNOTATION: None}}})
        self.log.info("API servers of %s ready again; downtime %.2fs", ref, downtime or 0)
        return {"api_available_at": rfc3339(now, milliseconds=True), "api_downtime_seconds": downtime}


def hashkv_at_common_revision(
    op: KubernetesExecOperator, ns: str, snaps: list[etcd.MemberSnapshot]
) -> dict[str, etcd.HashKV] | None:
    """Every member's ``endpoint hashkv`` at the revision all snapshots hold (all members at once).

    None when the snapshots' revisions are equal: their hashes alone are compared then.

    :param op: the operator whose exec runs it.
    :param ns: the control-plane namespace.
    :param snaps: every member's snapshot.
    """
    from hcp_etcd.hooks.hosted_cluster import ExecError

    if len({s.status.revision for s in snaps}) == 1:
        return None
    common = etcd.common_revision(snaps)

    def hashkv(pod: str, hook: HostedClusterHook) -> etcd.HashKV:
        out = op.exec_in_pod(ns, pod, etcd.hashkv_command(common), timeout=600, hook=hook)
        return etcd.parse_hashkv(out.stdout)

    try:
        hashes = op.exec_in_each([s.pod for s in snaps], hashkv)
    except ExecInEachError as err:
        if any(isinstance(e, ExecError) and "compacted" in str(e) for e in err.failed.values()):
            # kube-apiserver compacts to a revision it read one interval (5 min) earlier, and a
            # restarted one waits a second interval: this comparison came too late.
            raise RuntimeError(
                f"revision {common} of {ns} was compacted before the members could be compared: run "
                "the backup again (the snapshot task compares them before it restarts the API servers)"
            ) from err
        raise
    op.log.info(
        "snapshots at revisions %s: hashkv at the common revision %s: %s",
        {s.pod: s.status.revision for s in snaps},
        common,
        {pod: h.hash for pod, h in hashes.items()},
    )
    return hashes


class SnapshotMembersOperator(KubernetesExecOperator):
    """``etcdctl snapshot save`` in every etcd member (the seed's command), all members at once.

    One exec per member (:meth:`~KubernetesExecOperator.exec_in_each`): the API downtime of an HA
    cluster is that of its slowest member, not the sum. ``on_kill`` stops them all.

    Quiesced, it scales the API servers back to the replicas the quiesce recorded as soon as every
    member's snapshot file exists: the downtime window then ends in this task, not one scheduler
    hand-off later. Before it does, it measures what ``verify`` needs to compare the members: each
    snapshot's status (read in the same exec as the snapshot) and, when their revisions differ,
    every member's ``endpoint hashkv`` at the revision all snapshots hold. That revision survives
    only while no API server runs: a running kube-apiserver compacts etcd's history every 5 minutes
    (the sandbox's reliability tier: every 4 s), so measured one hand-off later it may be gone.

    The ``resume`` teardown stays the safety net (it scales back whatever this task did not, waits
    until the API servers are ready and clears the record). A retry of this task
    finds the API servers up again if an earlier try scaled them back before it died: it stops them
    again before snapshotting, so a quiesced backup is never taken with writers running.

    :param quiesce: the quiesce step's result (``{"replicas": {deployment: n}, ...}``); None (online
        mode) leaves the API servers alone. (templated)
    :param snapshot_path: the file in the etcd container (on the etcd volume).
    :param timeout: seconds per member (and for the API servers' pods to go on a retry).
    :return: ``{"ts", "created_at", "members", "statuses", "hashkv", "scaled_back", "stopped_again",
        "api_available_at"}``: ``statuses`` maps each pod to its snapshot's status, ``hashkv`` each
        pod to its hashkv at the common revision (None: not measured, the revisions are equal or the
        backup is online).
    """

    template_fields: tuple[str, ...] = (*KubernetesExecOperator.template_fields, "quiesce")

    def __init__(
        self,
        *,
        quiesce: Any = None,
        snapshot_path: str = etcd.DEFAULT_SNAPSHOT_PATH,
        timeout: float = 1800,
        **kwargs: Any,
    ) -> None:
        """See the class docstring."""
        super().__init__(timeout=timeout, **kwargs)
        self.quiesce = quiesce
        self.snapshot_path = snapshot_path

    def execute(self, context: Context) -> dict[str, Any]:
        """Snapshot every member concurrently (a retry overwrites: idempotent); raise if any failed."""
        ref = self.ref
        ns = ref.control_plane_namespace
        replicas: dict[str, int] = dict((self.quiesce or {}).get("replicas") or {})
        stopped_again = False
        if replicas and int(getattr(context.get("ti"), "try_number", 1) or 1) > 1:
            stopped_again = self._stop_api_servers_again(ns, replicas)
        started = utcnow()
        members = self.k8s.list_etcd_pods(ns)
        # The status in the same exec: one round trip less inside the downtime window.
        script = (
            f"{shlex.join(etcd.remove_command(self.snapshot_path))} && "
            f"{shlex.join(etcd.snapshot_save_command(self.snapshot_path))} && "
            f"exec {shlex.join(etcd.snapshot_status_command(self.snapshot_path))}"
        )

        def snapshot(pod: str, hook: HostedClusterHook) -> etcd.MemberSnapshot:
            lines: list[str] = []

            def line(text: str) -> None:
                lines.append(text)
                self.log.info("[%s] %s", pod, text)

            self.exec_in_pod(ns, pod, ["sh", "-c", script], on_stdout_line=line, log_output=True, hook=hook)
            self.log.info("snapshot of member %s/%s written to %s", ns, pod, self.snapshot_path)
            return etcd.MemberSnapshot(pod, etcd.parse_snapshot_status("\n".join(lines)))

        try:
            snaps = list(self.exec_in_each(members, snapshot).values())
        except ExecInEachError as err:
            raise RuntimeError(f"snapshot of {len(err.failed)} member(s) of {ref} failed: {err}") from err
        hashkv = hashkv_at_common_revision(self, ns, snaps) if replicas else None
        available_at = None
        if replicas:
            for dep, n in replicas.items():
                self.k8s.scale_deployment(ns, dep, n)
                self.log.info("scaled %s/%s back to %s", ns, dep, n)
            available_at = self._wait_api_servers_ready(ns, replicas)
        return {
            "ts": format_backup_ts(started),
            "created_at": rfc3339(started),
            "members": members,
            "statuses": {snap.pod: snap.status.as_dict() for snap in snaps},
            "hashkv": None if hashkv is None else {pod: asdict(h) for pod, h in hashkv.items()},
            "scaled_back": sorted(replicas),
            "stopped_again": stopped_again,
            "api_available_at": available_at,
        }

    def _wait_api_servers_ready(self, ns: str, replicas: dict[str, int]) -> str | None:
        """When the API servers it scaled back were ready (the end of the downtime), polled here.

        Seconds normally; after ``INLINE_WAIT_SECONDS`` it leaves the wait to the resume teardown
        (a worker slot is not held for long) and returns None.
        """
        from hcp_etcd.operators.base import run_trigger
        from hcp_etcd.triggers.wait import DeploymentsReadyTrigger

        trigger = DeploymentsReadyTrigger(
            namespace=ns,
            deployments=list(replicas),
            kubernetes_conn_id=self.kubernetes_conn_id,
            timeout=INLINE_WAIT_SECONDS,
            poll_interval=INLINE_POLL_SECONDS,
        )
        event = run_trigger(trigger)
        if event.get("status") != "success":
            self.log.warning("API servers of %s not ready yet (%s): resume waits", ns, event.get("message"))
            return None
        self.log.info("API servers of %s ready again", ns)
        return rfc3339(utcnow(), milliseconds=True)

    def _stop_api_servers_again(self, ns: str, replicas: dict[str, int]) -> bool:
        """On a retry: scale to 0 what an earlier try scaled back, and wait until their pods are gone."""
        from hcp_etcd.operators.base import run_trigger

        running = [dep for dep in replicas if self.k8s.get_deployment_replicas(ns, dep)[0] > 0]
        if not running:
            return False
        self.log.warning(
            "retry: the API servers %s of %s are up again (an earlier try scaled them back): stopping "
            "them again before the snapshot",
            running,
            ns,
        )
        event = run_trigger(
            stop_api_servers(self, ns, running, float(self.timeout), poll_interval=INLINE_POLL_SECONDS)
        )
        if event.get("status") != "success":
            raise RuntimeError(f"API servers {running} of {ns} did not stop again: {event.get('message')}")
        return True


class VerifySnapshotsOperator(KubernetesExecOperator):
    """``snapshot status`` of every member's snapshot; quiesced: the members must agree.

    Agreement is judged as etcd judges it (:func:`hcp_etcd.etcd.check_members_agree`): the same hash
    at the same revision, else the same ``endpoint hashkv`` at the revision every snapshot holds
    (expired Events leases are revoked while the API servers are stopped, each a new revision). The
    hashkv is the one the snapshot task measured while the API servers were still stopped (see
    :class:`SnapshotMembersOperator`); each status read here must be the one it recorded, or the
    file changed after the snapshot.

    Also records, for the restore verification, what the canonical snapshot holds, read at the
    current revision (never ``--rev``: see :func:`hcp_etcd.etcd.keys_listing_command`) and told
    apart from later writes by the keys' revisions: keys per ``/kubernetes.io/<resource>/``, how
    many of them are bound to an etcd lease, and sampled keys with the SHA-256 of their values.

    A ``type: kms`` cluster has no escrowed key to prove the backup readable with: sampled Secrets of
    the snapshot (values not changed since) are decrypted through AWS KMS instead, with the AWS
    connection (``kms:Decrypt`` on the cluster's key ARNs), each under a key the HostedCluster
    references (``secret_decrypts``); a failure fails the task, naming the keys and the permission.

    :param mode: ``quiesced`` or ``online``. (templated)
    :param snapshot: the snapshot step's result (its ``statuses`` and ``hashkv``); None measures the
        hashkv here, which fails if the common revision was compacted in between. (templated)
    :param snapshot_path: the file in the etcd container.
    :param samples_per_resource: keys sampled per stable resource.
    :param max_samples: at most this many sampled keys in all.
    :param aws_conn_id: the AWS connection of the KMS check (``type: kms`` clusters). (templated)
    :param secret_samples: Secrets to decrypt through KMS when the sample holds none.
    :return: ``{"members", "canonical", "status", "etcd_version", "key_counts", "leased_key_counts",
        "samples", "listed_at_revision", "secret_decrypts"}`` (the last: the KMS check, or None).
    """

    template_fields: tuple[str, ...] = (
        *KubernetesExecOperator.template_fields,
        "mode",
        "snapshot",
        "aws_conn_id",
    )
    kms_hook_class: str = "hcp_etcd.hooks.kms.KeyManagementHook"

    def __init__(
        self,
        *,
        mode: str = "quiesced",
        snapshot: Any = None,
        snapshot_path: str = etcd.DEFAULT_SNAPSHOT_PATH,
        samples_per_resource: int = 4,
        max_samples: int = 64,
        aws_conn_id: str = "aws_default",
        secret_samples: int = 3,
        **kwargs: Any,
    ) -> None:
        """See the class docstring."""
        super().__init__(**kwargs)
        self.mode = mode
        self.snapshot = snapshot
        self.snapshot_path = snapshot_path
        self.samples_per_resource = samples_per_resource
        self.max_samples = max_samples
        self.aws_conn_id = aws_conn_id
        self.secret_samples = secret_samples

    def execute(self, context: Context) -> dict[str, Any]:
        """Status, compare, count, sample."""
        ref, mode = self.ref, _mode(str(self.mode))
        ns = ref.control_plane_namespace
        snaps = []
        for pod in self.k8s.list_etcd_pods(ns):
            out = self.exec_in_pod(ns, pod, etcd.snapshot_status_command(self.snapshot_path), timeout=300)
            status = etcd.parse_snapshot_status(out.stdout)
            self.log.info(
                "member %s: revision %s hash %s keys %s size %s",
                pod,
                status.revision,
                status.hash,
                status.total_keys,
                status.total_size,
            )
            snaps.append(etcd.MemberSnapshot(pod, status))
        taken = dict(self.snapshot or {})
        for snap in snaps:
            recorded = (taken.get("statuses") or {}).get(snap.pod)
            if recorded is not None and (recorded["revision"], recorded["hash"]) != (
                snap.status.revision,
                snap.status.hash,
            ):
                raise etcd.SnapshotStatusError(
                    f"the snapshot file of {ns}/{snap.pod} changed after the snapshot task wrote it "
                    f"(revision {recorded['revision']} hash {recorded['hash']} then, revision "
                    f"{snap.status.revision} hash {snap.status.hash} now): clear the task to snapshot again"
                )
        if mode == "quiesced":
            if taken.get("statuses"):
                recorded_hashkv = taken.get("hashkv")
                hashkv = (
                    None
                    if recorded_hashkv is None
                    else {pod: etcd.HashKV(**h) for pod, h in recorded_hashkv.items()}
                )
            else:
                hashkv = hashkv_at_common_revision(self, ns, snaps)
            etcd.check_members_agree(snaps, hashkv)
        canonical = etcd.choose_canonical(snaps)
        version = etcd.parse_endpoint_status(
            self.exec_in_pod(ns, canonical.pod, etcd.endpoint_status_command(), timeout=60).stdout
        ).version
        inventory = etcd.KeyInventory(
            revision=canonical.status.revision, samples_per_resource=self.samples_per_resource
        )
        self.exec_in_pod(
            ns,
            canonical.pod,
            etcd.keys_listing_command(),
            timeout=600,
            on_stdout_line=lambda line: inventory.feed([line]),
        )
        samples, values = self._samples(ns, canonical, inventory.samples[: self.max_samples])
        decrypts = self._kms_decrypts(ns, canonical, values)
        self.log.info(
            "canonical snapshot: %s (revision %s); %s of its keys under %s (listed at revision %s): %s; "
            "%s bound to etcd leases; %s sampled",
            canonical.pod,
            canonical.status.revision,
            inventory.total,
            etcd.RESOURCE_PREFIX,
            inventory.listed_revision,
            inventory.counts,
            sum(inventory.leased.values()),
            len(samples),
        )
        return {
            "members": [{"pod": s.pod, **s.status.as_dict()} for s in snaps],
            "canonical": canonical.pod,
            "status": canonical.status.as_dict(),
            "etcd_version": version,
            "key_counts": dict(sorted(inventory.counts.items())),
            "leased_key_counts": dict(sorted(inventory.leased.items())),
            "samples": samples,
            "listed_at_revision": inventory.listed_revision,
            "secret_decrypts": decrypts,
        }

    def _kms_decrypts(
        self, ns: str, canonical: etcd.MemberSnapshot, values: list[tuple[str, bytes]]
    ) -> dict[str, Any] | None:
        """A ``type: kms`` cluster: sampled Secrets of the snapshot decrypt through AWS KMS (None for
        an AES-CBC one, whose key is escrowed and checked by the restore)."""
        from hcp_etcd.restore.verify import check_secret_decrypts_kms

        hc = self.k8s.get_hosted_cluster(self.ref)
        if encryption_type(hc) != KMS:
            return None
        record = kms_record(hc)
        secrets = [(k, v) for k, v in values if etcd.resource_of_key(k) == "secrets"][: self.secret_samples]
        if not secrets:
            out = self.exec_in_pod(
                ns, canonical.pod, etcd.secret_sample_command(self.secret_samples), timeout=120
            )
            secrets = etcd.parse_get_values(out.stdout)[: self.secret_samples]
        hook = import_string(self.kms_hook_class)(aws_conn_id=self.aws_conn_id)
        region = record.get("region")
        check = check_secret_decrypts_kms(
            secrets, record["kms_key_arns"], lambda blob: hook.decrypt(blob, region_name=region)
        )
        self.log.info("check %s %s  %s", check.name, "PASS" if check.passed else "FAIL", check.detail)
        if not check.passed:
            raise RuntimeError(
                f"{self.ref}: Secrets of the snapshot do not decrypt through AWS KMS, so a restore could "
                f"not read them: {check.detail}"
            )
        return check.as_dict()

    def _samples(
        self, ns: str, canonical: etcd.MemberSnapshot, keys: list[str]
    ) -> tuple[list[dict[str, Any]], list[tuple[str, bytes]]]:
        """The sampled keys' value hashes, and their values, for values not changed since the snapshot."""
        if not keys:
            return [], []
        found = etcd.parse_get_json_lines(
            self.exec_in_pod(ns, canonical.pod, etcd.get_keys_command(keys), timeout=300).stdout
        )
        # Changed after the snapshot in the meantime: its value is not the snapshot's.
        kept = [
            v for v in (found[k] for k in keys if k in found) if v.mod_revision <= canonical.status.revision
        ]
        return (
            [{"key": v.key, "sha256": v.sha256, "mod_revision": v.mod_revision} for v in kept],
            [(v.key, v.value) for v in kept],
        )


class EscrowEncryptionKeyOperator(StoreOperator):
    """Copy the etcd encryption key(s) into S3, in this one task: the key never leaves it.

    Reads the ``data.key`` of every Secret the HostedCluster references (``spec.secretEncryption.aescbc``
    ``activeKey`` and ``backupKey``, ``status.secretEncryption`` ``activeKey`` and ``targetKey``: a
    rotation in progress has Secrets in etcd under two keys) and writes each key once to
    ``{key_prefix}/{ns}/{name}/{sha256}.key`` with SSE (content-addressed: unchanged keys share one
    object, across backup prefixes too). It escrows the service-account signing key the same way:
    ``service-account.key`` of ``sa-signing-key`` in the control-plane namespace (the key
    kube-apiserver signs tokens with, generated or brought by ``spec.serviceAccountSigningKey``) to
    ``{key_prefix}/{ns}/{name}/sa-signing-key/{sha256}.key``. First it registers the run's backup
    location (bucket and prefix) in the key store, so that key garbage collection reads every location
    whose manifests may refer to a key. Returns only locations and fingerprints.

    :param key_bucket: bucket for keys (default: ``bucket``), separately permissionable. (templated)
    :param key_prefix: prefix for keys. (templated)
    A ``type: kms`` cluster has no AES key: the task logs that there is none to escrow, returns the
    cluster's KMS key ARNs as ``encryption`` (:func:`hcp_etcd.encryption.kms_record`) with ``location``
    None, and escrows the service-account signing key as for any cluster.

    :return: ``{"location", "sha256", "backup_key": {...} | None, "keys": [...], "encryption",
        "service_account_key": {...}}``: the keys the restored cluster gets as ``activeKey`` and
        ``backupKey`` (:func:`hcp_etcd.encryption.restore_keys`), every escrowed key with its roles,
        Secrets, fingerprint and kube-apiserver key name, and the service-account key's location and
        fingerprints (never a key).
    """

    template_fields: tuple[str, ...] = (*StoreOperator.template_fields, "key_bucket", "key_prefix")

    def __init__(
        self, *, key_prefix: str = "hcp-etcd-keys", key_bucket: str | None = None, **kwargs: Any
    ) -> None:
        """See the class docstring."""
        super().__init__(**kwargs)
        self.key_prefix = key_prefix
        self.key_bucket = key_bucket

    def _escrow(self, ref: ClusterRef, raw: bytes, naming: Any = encryption_key_key) -> tuple[str, str]:
        """Write one key (content-addressed, once); returns its ``s3://`` location and fingerprint."""
        fingerprint = hashlib.sha256(raw).hexdigest()
        bucket = self.store.key_bucket
        key = naming(self.store.key_prefix, ref, fingerprint)
        if self.s3.object_size(bucket, key) != len(raw):
            self.s3.put_bytes(raw, bucket, key, self.kms)
        return f"s3://{bucket}/{key}", fingerprint

    def execute(self, context: Context) -> dict[str, Any]:
        """Escrow every key spec and status reference, once per content."""
        ref = self.ref
        hc = self.k8s.get_hosted_cluster(ref)
        # Before any key: key garbage collection reads the manifests of every registered location.
        store = self.store
        self.s3.register_backup_location(
            store.key_bucket, store.key_prefix, store.bucket, store.prefix, store.kms_key_id
        )
        if encryption_type(hc) == KMS:
            return self._record_kms_keys(ref, hc)
        raw_keys = read_escrow_keys(self.k8s, ref, hc)
        escrowed: dict[str, EscrowedKey] = {}
        for kref in key_references(hc):
            raw = raw_keys[kref.secret]
            fingerprint = hashlib.sha256(raw).hexdigest()
            entry = escrowed.get(fingerprint)
            if entry is None:
                location, _ = self._escrow(ref, raw)
                entry = escrowed[fingerprint] = EscrowedKey(fingerprint, aescbc.kas_key_name(raw), location)
            entry.roles.append(kref.role)
            if kref.secret not in entry.secrets:
                entry.secrets.append(kref.secret)
        del raw_keys
        for entry in escrowed.values():
            self.log.info(
                "encryption key %s of %s (%s; Secret %s; sha256 %s) escrowed to %s",
                entry.kas_key_name,
                ref,
                ", ".join(entry.roles),
                ", ".join(entry.secrets),
                entry.sha256,
                entry.location,
            )
        active, backup = restore_keys(list(escrowed.values()))
        return {
            "location": active.location,
            "sha256": active.sha256,
            "backup_key": {"location": backup.location, "sha256": backup.sha256} if backup else None,
            "keys": [e.as_dict() for e in escrowed.values()],
            "encryption": {"type": "aescbc"},
            "service_account_key": self._escrow_service_account_key(ref),
        }

    def _record_kms_keys(self, ref: ClusterRef, hc: dict[str, Any]) -> dict[str, Any]:
        """A ``type: kms`` cluster: no AES key exists to escrow (AWS KMS keeps the key); the manifest
        records the key ARNs a restore must use. The service-account signing key is escrowed still."""
        record = kms_record(hc)
        for entry in record["kms_keys"]:
            self.log.info(
                "%s encrypts Secrets with AWS KMS: no key to escrow; recording key %s (%s; kube-apiserver "
                "provider %s): a restore must use the same key",
                ref, entry["arn"], ", ".join(entry["roles"]), entry["provider_name"],
            )  # fmt: skip
        return {
            "location": None,
            "sha256": None,
            "backup_key": None,
            "keys": None,
            "encryption": record,
            "service_account_key": self._escrow_service_account_key(ref),
        }

    def _escrow_service_account_key(self, ref: ClusterRef) -> dict[str, str] | None:
        """Escrow ``service-account.key`` of the control plane's ``sa-signing-key``.

        Forbidden or missing, the backup goes on without it (None; the manifest then has none and a
        restore gets a new signing key, as before): etcd's data and the AES keys are worth more than
        the tokens, and an installation whose RBAC predates this rule must not lose its nightly
        backups. The log says what to grant.
        """
        from kubernetes.client.rest import ApiException

        ns, name = ref.control_plane_namespace, sakey.CONTROL_PLANE_SECRET
        try:
            data = self.k8s.read_secret_data(ns, name)
        except ApiException as err:
            if err.status not in (403, 404):
                raise
            fix = "grant get on it: include/rbac/10-backup.yaml" if err.status == 403 else "it does not exist"
            self.log.warning(
                "service-account signing key Secret %s/%s of %s not escrowed (%s %s: %s): a restore of this "
                "backup gets a new signing key, and the tokens the cluster issued stop validating",
                ns, name, ref, err.status, err.reason, fix,
            )  # fmt: skip
            return None
        for value in data.values():
            mask_secret(value)
        encoded = data.get(sakey.PRIVATE_KEY)
        if not encoded:
            raise RuntimeError(f"Secret {ns}/{name} of {ref} has no data.{sakey.PRIVATE_KEY}")
        raw = base64.b64decode(encoded)
        mask_secret(raw.decode("ascii", "replace"))
        del data, encoded
        try:
            public_sha256 = sakey.private_key_fingerprint(raw)
        except sakey.ServiceAccountKeyError as err:
            raise RuntimeError(f"Secret {ns}/{name} of {ref}: {sakey.PRIVATE_KEY} is {err}") from None
        location, sha256 = self._escrow(ref, raw, service_account_key_key)
        del raw
        self.log.info(
            "service-account signing key of %s (Secret %s/%s; public key sha256 %s) escrowed to %s",
            ref, ns, name, public_sha256, location,
        )  # fmt: skip
        return {
            "location": location,
            "sha256": sha256,
            "public_key_sha256": public_sha256,
            "secret": f"{ns}/{name}",
        }


class CleanupSnapshotsOperator(KubernetesExecOperator):
    """Delete the snapshot files from every etcd pod (teardown; idempotent; fails if any remains).

    :param snapshot_path: the file in the etcd container.
    """

    def __init__(self, *, snapshot_path: str = etcd.DEFAULT_SNAPSHOT_PATH, **kwargs: Any) -> None:
        """See the class docstring."""
        super().__init__(**kwargs)
        self.snapshot_path = snapshot_path

    def execute(self, context: Context) -> None:
        """``rm -f`` in every member; keep going on errors, raise at the end."""
        ref = self.ref
        ns = ref.control_plane_namespace
        failed = []
        for pod in self.k8s.list_etcd_pods(ns):
            try:
                self.exec_in_pod(ns, pod, etcd.remove_command(self.snapshot_path), timeout=60)
                self.log.info("removed %s from %s/%s", self.snapshot_path, ns, pod)
            except Exception as err:
                failed.append(f"{pod}: {err}")
        if failed:
            raise RuntimeError(
                f"snapshot files left in etcd pods of {ref} (remove them by hand, they use the "
                f"etcd volume): {'; '.join(failed)}"
            )


class UnpauseReconciliationOperator(HostedClusterPatchOperator):
    """Put ``spec.pausedUntil`` back to what it was (``null`` normally) and release the lock.

    The teardown of the pause. Only touches a cluster whose lock or pause record is this run's.

    :param mode: ``quiesced`` or ``online``. (templated)
    :return: the merge patch that was applied.
    """

    template_fields: tuple[str, ...] = (*HostedClusterOperator.template_fields, "mode")

    def __init__(self, *, mode: str = "quiesced", **kwargs: Any) -> None:
        """See the class docstring."""
        super().__init__(**kwargs)
        self.mode = mode

    def execute(self, context: Context) -> dict[str, Any] | None:
        """Restore and release."""
        ref, run_id = self.ref, self.run_id(context)
        hc = self.k8s.get_hosted_cluster(ref)
        annotations = _annotations(hc)
        lock = BackupLock.from_annotations(annotations)
        recorded, previous = read_previous_pause(annotations, run_id)
        ours = lock is not None and lock.held_by(run_id, self.dag_id)
        if not ours and not recorded:
            self.log.warning(
                "%s holds no lock or pause of run %s (lock: %s): leaving it alone",
                ref,
                run_id,
                annotations.get(LOCK_ANNOTATION),
            )
            return None
        patch: dict[str, Any] = {"metadata": {"annotations": {PREVIOUS_PAUSE_ANNOTATION: None}}}
        if ours:
            patch["metadata"]["annotations"][LOCK_ANNOTATION] = None
        if recorded:
            patch["spec"] = {"pausedUntil": previous}
        self.log.info("restoring %s", ref)
        self.apply_patch(patch, current=hc)
        return patch


class WaitHostedClusterAvailableOperator(HostedClusterOperator):
    """Wait (deferrable) until the HostedCluster is Available (and reconciling, after a quiesced run).

    :param mode: ``quiesced`` or ``online``. (templated)
    :param timeout: seconds.
    """

    template_fields: tuple[str, ...] = (*HostedClusterOperator.template_fields, "mode")

    def __init__(self, *, mode: str = "quiesced", timeout: float = 1200, **kwargs: Any) -> None:
        """See the class docstring."""
        super().__init__(**kwargs)
        self.mode = mode
        self.timeout = timeout

    def execute(self, context: Context) -> Any:
        """Defer to the trigger."""
        from hcp_etcd.triggers.wait import HostedClusterAvailableTrigger

        ref = self.ref
        trigger = HostedClusterAvailableTrigger(
            namespace=ref.namespace,
            name=ref.name,
            reconciling=_mode(str(self.mode)) == "quiesced",
            kubernetes_conn_id=self.kubernetes_conn_id,
            timeout=self.timeout,
        )
        return self.wait(trigger, "execute_complete", context)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> None:
        """Fail with what was missing on timeout."""
        if event.get("status") != "success":
            raise RuntimeError(
                f"HostedCluster {self.ref} not Available within {self.timeout:.0f}s: {event.get('message')}"
            )
        self.log.info("HostedCluster %s is Available", self.ref)


__all__ = [
    "BackupPreflightOperator",
    "CleanupSnapshotsOperator",
    "EscrowEncryptionKeyOperator",
    "PauseReconciliationOperator",
    "QuiesceApiServersOperator",
    "ResumeApiServersOperator",
    "SnapshotMembersOperator",
    "UnpauseReconciliationOperator",
    "VerifySnapshotsOperator",
    "WaitHostedClusterAvailableOperator",
]
