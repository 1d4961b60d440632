"""Fleet-level steps: resolve which clusters to back up, apply retention."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import Context

from hcp_etcd import metrics, params
from hcp_etcd.errors import ConfigurationError, describe, fail_fast_on_configuration_errors
from hcp_etcd.manifest import ManifestError, referenced_key_objects, validate_manifest
from hcp_etcd.naming import (
    ClusterRef,
    cluster_prefix,
    encryption_key_key,
    parse_backup_ts,
)
from hcp_etcd.operators.base import HostedClusterOperator, StoreOperator, utcnow
from hcp_etcd.retention import (
    Backup,
    BackupDir,
    RetentionPolicy,
    group_backup_dirs,
    plan_retention,
    stale_incomplete,
    unreferenced_keys,
)

if TYPE_CHECKING:
    from hcp_etcd.hooks.snapshot_store import SnapshotStoreHook


class ResolveHostedClustersOperator(HostedClusterOperator):
    """Turn the ``hosted_clusters`` Param (or the label selector) into a validated list of refs.

    An explicitly listed cluster that does not exist fails the run before anything changes.

    The first task of its DAG, it also fails (without retries) on invalid settings of the Airflow
    environment, which the DAG file ignored at parse (see :mod:`hcp_etcd.params`).

    :param hosted_clusters: ``namespace/name`` refs; empty selects by ``label_selector``. (templated)
    :param label_selector: label selector over all namespaces. (templated)
    :param schedule_setting: ``(environment variable, default)`` of the DAG's schedule, checked too.
    :return: sorted ``namespace/name`` strings.
    """

    template_fields: tuple[str, ...] = ("hosted_clusters", "label_selector", "kubernetes_conn_id")

    def __init__(
        self,
        *,
        hosted_clusters: Any = (),
        label_selector: str = "",
        schedule_setting: tuple[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        """See the class docstring."""
        super().__init__(**kwargs)
        self.hosted_clusters = hosted_clusters
        self.label_selector = label_selector
        self.schedule_setting = schedule_setting

    @fail_fast_on_configuration_errors
    def execute(self, context: Context) -> list[str]:
        """Validate or select."""
        params.check_settings(*filter(None, [self.schedule_setting]))
        wanted = [ClusterRef.parse(r) for r in (self.hosted_clusters or [])]
        if wanted:
            missing = [str(r) for r in wanted if not self.k8s.hosted_cluster_exists(r)]
            if missing:
                raise ConfigurationError(
                    f"HostedClusters not found: {', '.join(missing)} (check namespace/name)"
                )
            refs = sorted(set(wanted))
        else:
            items = self.k8s.list_hosted_clusters(str(self.label_selector or ""))
            refs = sorted({ClusterRef(i["metadata"]["namespace"], i["metadata"]["name"]) for i in items})
            if not refs:
                raise ConfigurationError(f"no HostedCluster matches label selector {self.label_selector!r}")
        self.log.info("backing up %d hosted cluster(s): %s", len(refs), ", ".join(map(str, refs)))
        return [str(r) for r in refs]


class BackupRetentionOperator(StoreOperator):
    """Grandfather-father-son retention over the verified backups of each cluster.

    Deletes only what it understands (see :mod:`hcp_etcd.retention`): backups whose valid manifest the
    policy does not keep (the newest valid backup is never deleted), and directories without any
    ``manifest.json`` older than ``incomplete_grace_minutes`` (failed backups). A directory whose
    manifest exists but cannot be read or validated is kept and reported as ``unreadable``. An
    escrowed key object is removed only when no manifest of any backup location registered in the key
    store refers to it. Objects that S3 Object Lock protects are kept and reported as ``locked``.
    Logs everything; ``dry_run`` only logs.

    :param hosted_clusters: the clusters (``namespace/name``). (templated)
    :param key_prefix: prefix of escrowed keys. (templated)
    :param key_bucket: bucket of keys (default ``bucket``). (templated)
    :param keep_last: see ``RetentionPolicy``. (templated)
    :param keep_hourly: see ``RetentionPolicy``. (templated)
    :param keep_daily: see ``RetentionPolicy``. (templated)
    :param keep_weekly: see ``RetentionPolicy``. (templated)
    :param keep_monthly: see ``RetentionPolicy``. (templated)
    :param dry_run: list, delete nothing. (templated)
    :param bypass_governance_retention: delete objects under GOVERNANCE-mode Object Lock (needs
        ``s3:BypassGovernanceRetention``; never COMPLIANCE mode or a legal hold). (templated)
    :param incomplete_grace_minutes: age after which a manifest-less directory is dead.
    :param replica_bucket: the replica bucket: the same policy applies to its backups and keys
        (empty: none). (templated)
    :param replica_aws_conn_id: its connection (empty: ``aws_conn_id``). (templated)
    :param replica_kms_key_id: its SSE-KMS key. (templated)
    :return: per cluster: kept, deleted, incomplete removed, unreadable, locked, keys removed.
    """

    template_fields: tuple[str, ...] = (
        *StoreOperator.template_fields,
        "hosted_clusters",
        "key_prefix",
        "key_bucket",
        "keep_last",
        "keep_hourly",
        "keep_daily",
        "keep_weekly",
        "keep_monthly",
        "dry_run",
        "bypass_governance_retention",
        "replica_bucket",
        "replica_aws_conn_id",
        "replica_kms_key_id",
    )

    def __init__(
        self,
        *,
        hosted_clusters: Any,
        key_prefix: str = "hcp-etcd-keys",
        key_bucket: str | None = None,
        keep_last: int | str = 7,
        keep_hourly: int | str = 0,
        keep_daily: int | str = 7,
        keep_weekly: int | str = 4,
        keep_monthly: int | str = 6,
        dry_run: bool | str = False,
        bypass_governance_retention: bool | str = False,
        incomplete_grace_minutes: float = 360,
        replica_bucket: str | None = None,
        replica_aws_conn_id: str | None = None,
        replica_kms_key_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        """See the class docstring."""
        super().__init__(**kwargs)
        self.replica_bucket = replica_bucket
        self.replica_aws_conn_id = replica_aws_conn_id
        self.replica_kms_key_id = replica_kms_key_id
        self.hosted_clusters = hosted_clusters
        self.key_prefix = key_prefix
        self.key_bucket = key_bucket
        self.keep_last = keep_last
        self.keep_hourly = keep_hourly
        self.keep_daily = keep_daily
        self.keep_weekly = keep_weekly
        self.keep_monthly = keep_monthly
        self.dry_run = dry_run
        self.bypass_governance_retention = bypass_governance_retention
        self.incomplete_grace_minutes = incomplete_grace_minutes

    @fail_fast_on_configuration_errors
    def execute(self, context: Context) -> dict[str, Any]:
        """Plan and apply per cluster."""
        policy = RetentionPolicy(
            int(self.keep_last),
            int(self.keep_daily),
            int(self.keep_weekly),
            int(self.keep_monthly),
            keep_hourly=int(self.keep_hourly),
        )
        run = self._run(self.s3, self.store)
        if run.bypass:
            self.log.warning("bypass_governance_retention is on: GOVERNANCE-locked backups may be deleted")
        # The replica is a backup location of its own: the same policy over its own backups (so it
        # always keeps its newest, even when copies have failed for a while).
        replica = None if self.replica_store is None else self._run(self.replica_s3, self.replica_store)
        summary, replica_failed = {}, {}
        for ref in sorted({ClusterRef.parse(r) for r in (self.hosted_clusters or [])}):
            summary[str(ref)] = result = self._one(ref, policy, run)
            metrics.emit_retention(ref.namespace, ref.name, result)
            if replica is not None:
                try:
                    result["replica"] = self._one(ref, policy, replica)
                except (_client_error(), _botocore_error()) as err:
                    replica_failed[str(ref)] = result["replica"] = {"error": describe(err, 300)}
        if replica_failed:
            raise RuntimeError(
                f"retention of the replica s3://{replica.store.bucket if replica else '?'} failed for "
                f"{', '.join(sorted(replica_failed))} (the primary's was applied): check the replica's "
                "connection; the next run applies it again"
            )
        return summary

    def _run(self, hook: SnapshotStoreHook, store: params.StoreSettings) -> _Run:
        """What retention of one backup location works with, its key store's locations read once."""
        run = _Run(
            store=store,
            s3=hook,
            dry=_flag(self.dry_run),
            bypass=_flag(self.bypass_governance_retention),
            now=utcnow(),
            grace=timedelta(minutes=float(self.incomplete_grace_minutes)),
        )
        try:
            run.locations, run.first_registered = hook.backup_locations(store.key_bucket, store.key_prefix)
        except (_client_error(), _botocore_error(), ValueError) as err:
            run.locations_problem = f"the key store's backup locations are unreadable ({describe(err)})"
        return run

    def _backup_dirs(self, hook: SnapshotStoreHook, bucket: str, base: str) -> dict[str, BackupDir]:
        """The backup directories under ``{base}/`` (a cluster's prefix in one location)."""
        return group_backup_dirs(hook.list_backup_objects(bucket, base), base)

    def _read_manifests(
        self, hook: SnapshotStoreHook, bucket: str, base: str, ref: ClusterRef, dirs: dict[str, BackupDir]
    ) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
        """The valid manifests of a cluster's backup directories, and why the others are unreadable."""
        valid: dict[str, dict[str, Any]] = {}
        unreadable: dict[str, str] = {}
        for ts, d in dirs.items():
            if d.manifest_key is None:
                continue
            try:
                manifest = validate_manifest(hook.get_json(bucket, d.manifest_key))
                if manifest["hosted_cluster"] != {"namespace": ref.namespace, "name": ref.name}:
                    raise ManifestError(f"manifest of another cluster ({manifest['hosted_cluster']})")
                valid[ts] = manifest
            except (ManifestError, ValueError, _client_error()) as err:
                unreadable[ts] = describe(err, 300)
        return valid, unreadable

    def _one(self, ref: ClusterRef, policy: RetentionPolicy, run: _Run) -> dict[str, Any]:
        verb = "would delete" if run.dry else "deleting"
        base = cluster_prefix(run.store.prefix, ref)
        dirs = self._backup_dirs(run.s3, run.store.bucket, base)
        manifests, unreadable = self._read_manifests(run.s3, run.store.bucket, base, ref, dirs)
        for ts, why in sorted(unreadable.items()):
            self.log.warning(
                "%s keeping %s/%s: its manifest is unreadable (%s). Retention never deletes what it cannot "
                "read: check it with a current release of hcp-etcd, or delete it by hand",
                ref,
                base,
                ts,
                why,
            )
        backups = [Backup(parse_backup_ts(ts), ts, str(m["mode"])) for ts, m in manifests.items()]
        plan = plan_retention(backups, policy)
        no_manifest = [(ts, d.last_modified or run.now) for ts, d in dirs.items() if not d.has_manifest]
        dead = stale_incomplete(no_manifest, run.now, run.grace)
        for ts, reasons in sorted(plan.keep.items()):
            self.log.info("%s keeping %s (%s)", ref, ts, ", ".join(reasons))
        deleted, incomplete_deleted, locked = [], [], {}
        for ts, kind in [(ts, "backup") for ts in plan.delete] + [(ts, "incomplete") for ts in dead]:
            why_delete = f"not kept by {policy}" if kind == "backup" else "no manifest, older than the grace"
            self.log.info("%s %s %s %s/%s (%s)", ref, verb, kind, base, ts, why_delete)
            blocked = None
            if not run.dry:
                blocked = run.s3.delete_unless_locked(
                    run.store.bucket, dirs[ts].deletion_order(), run.now, run.bypass
                )
            if blocked:
                self.log.info("%s keeping %s/%s for now: %s", ref, base, ts, blocked)
                locked[ts] = blocked
            else:
                (deleted if kind == "backup" else incomplete_deleted).append(ts)
        # What remains refers to keys: the kept backups and those a lock kept.
        remaining = [manifests[ts] for ts in manifests if ts in plan.keep or ts in locked]
        keys = self._collect_keys(ref, run, remaining, unreadable)
        return {
            "kept": sorted(plan.keep),
            "deleted": deleted,
            "incomplete_deleted": incomplete_deleted,
            "unreadable": dict(sorted(unreadable.items())),
            "locked": dict(sorted(locked.items())),
            **keys,
            "dry_run": run.dry,
        }

    def _collect_keys(
        self, ref: ClusterRef, run: _Run, remaining: list[dict[str, Any]], unreadable: dict[str, str]
    ) -> dict[str, Any]:
        """Garbage-collect the cluster's escrowed keys that no backup location still refers to."""
        skipped = {"keys_deleted": [], "keys_locked": {}}
        referenced: set[str] = set()
        for manifest in remaining:
            referenced |= referenced_key_objects(manifest)
        problem = run.locations_problem
        if unreadable:
            problem = f"{len(unreadable)} unreadable manifest(s): the keys they need are unknown"
        for bucket, prefix in run.locations:
            if problem or (bucket, prefix) == (run.store.bucket, run.store.prefix.strip("/")):
                continue
            base = cluster_prefix(prefix, ref)
            try:
                others, bad = self._read_manifests(
                    run.s3, bucket, base, ref, self._backup_dirs(run.s3, bucket, base)
                )
            except _client_error() as err:
                others, bad = {}, {"*": describe(err, 300)}
            if bad:
                problem = f"backups under s3://{bucket}/{base} are unreadable ({next(iter(bad.values()))})"
            for manifest in others.values():
                referenced |= referenced_key_objects(manifest)
        if problem:
            self.log.warning("%s: no key is garbage-collected this run: %s", ref, problem)
            return {**skipped, "keys_gc": f"skipped: {problem}"}
        key_base = encryption_key_key(run.store.key_prefix, ref, "0" * 64).rsplit("/", 1)[0]
        key_objects = [
            (f"s3://{run.store.key_bucket}/{o.key}", o.last_modified)
            for o in run.s3.list_objects(run.store.key_bucket, key_base + "/")
            if o.key.endswith(".key")
        ]
        # Keys of backups still in progress (or just failed) are younger than the grace: spared. Keys
        # older than the first registered location may belong to a location nobody registered.
        drop = unreferenced_keys(key_objects, referenced, run.now, run.grace)
        first = run.first_registered
        predating = {loc for loc, modified in key_objects if first is None or modified < first}
        for loc in sorted(set(drop) & predating):
            self.log.info("%s keeping key object %s: older than the key store's location list", ref, loc)
        deleted, locked = [], {}
        for loc in sorted(set(drop) - predating):
            self.log.info(
                "%s %s key object %s (no manifest of any backup location refers to it)",
                ref,
                "would delete" if run.dry else "deleting",
                loc,
            )
            blocked = None
            if not run.dry:
                key = loc.split("/", 3)[3]
                blocked = run.s3.delete_unless_locked(run.store.key_bucket, [key], run.now, run.bypass)
            if blocked:
                locked[loc] = blocked
            else:
                deleted.append(loc)
        return {"keys_deleted": deleted, "keys_locked": locked, "keys_gc": "done"}


def _client_error() -> type[Exception]:
    # botocore is imported when a task runs, not when a DAG file imports this module (parse time).
    from botocore.exceptions import ClientError

    return ClientError


def _botocore_error() -> type[Exception]:
    # An endpoint that cannot be reached (another region's outage) is no ClientError.
    from botocore.exceptions import BotoCoreError

    return BotoCoreError


def _flag(value: Any) -> bool:
    return value in (True, "True", "true")


@dataclass
class _Run:
    """What one retention run works with (validated once)."""

    store: params.StoreSettings
    s3: SnapshotStoreHook
    dry: bool
    bypass: bool
    now: datetime
    grace: timedelta
    locations: list[tuple[str, str]] = field(default_factory=list)
    first_registered: datetime | None = None
    locations_problem: str | None = None
