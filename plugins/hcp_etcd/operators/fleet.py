"""Fleet-level steps: resolve which clusters to back up, apply retention."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import Context

from hcp_etcd.manifest import ManifestError, referenced_key_objects, validate_manifest
from hcp_etcd.naming import (
    ClusterRef,
    cluster_prefix,
    encryption_key_key,
    parse_backup_ts,
    validate_prefix,
)
from hcp_etcd.operators.base import HostedClusterOperator, StoreOperator, utcnow
from hcp_etcd.retention import (
    Backup,
    RetentionPolicy,
    group_backup_dirs,
    plan_retention,
    stale_incomplete,
    unreferenced_keys,
)


class ResolveHostedClustersOperator(HostedClusterOperator):
    """Turn the ``hosted_clusters`` Param (or the label selector) into a validated list of refs.

    An explicitly listed cluster that does not exist fails the run before anything changes.

    :param hosted_clusters: ``namespace/name`` refs; empty selects by ``label_selector``. (templated)
    :param label_selector: label selector over all namespaces. (templated)
    :return: sorted ``namespace/name`` strings.
    """

    template_fields: tuple[str, ...] = ("hosted_clusters", "label_selector", "kubernetes_conn_id")

    def __init__(self, *, hosted_clusters: Any = (), label_selector: str = "", **kwargs: Any) -> None:
        """See the class docstring."""
        super().__init__(hosted_cluster="-/-", **kwargs)
        self.hosted_clusters = hosted_clusters
        self.label_selector = label_selector

    def execute(self, context: Context) -> list[str]:
        """Validate or select."""
        wanted = [ClusterRef.parse(r) for r in (self.hosted_clusters or [])]
        if wanted:
            missing = [str(r) for r in wanted if not self.k8s.hosted_cluster_exists(r)]
            if missing:
                raise RuntimeError(f"HostedClusters not found: {', '.join(missing)} (check namespace/name)")
            refs = sorted(set(wanted))
        else:
            items = self.k8s.list_hosted_clusters(str(self.label_selector or ""))
            refs = sorted({ClusterRef(i["metadata"]["namespace"], i["metadata"]["name"]) for i in items})
            if not refs:
                raise RuntimeError(f"no HostedCluster matches label selector {self.label_selector!r}")
        self.log.info("backing up %d hosted cluster(s): %s", len(refs), ", ".join(map(str, refs)))
        return [str(r) for r in refs]


class BackupRetentionOperator(StoreOperator):
    """Grandfather-father-son retention over the verified backups of each cluster.

    Only directories with a valid manifest count as backups; the newest is never deleted. Directories
    without a manifest older than ``incomplete_grace_minutes`` are removed (failed backups). An
    escrowed key object is removed only when no remaining manifest refers to it. Logs everything;
    ``dry_run`` only logs.

    :param hosted_clusters: the clusters (``namespace/name``). (templated)
    :param key_prefix: prefix of escrowed keys. (templated)
    :param key_bucket: bucket of keys (default ``bucket``). (templated)
    :param keep_last: see ``RetentionPolicy``. (templated)
    :param keep_daily: see ``RetentionPolicy``. (templated)
    :param keep_weekly: see ``RetentionPolicy``. (templated)
    :param keep_monthly: see ``RetentionPolicy``. (templated)
    :param dry_run: list, delete nothing. (templated)
    :param incomplete_grace_minutes: age after which a manifest-less directory is dead.
    :return: per cluster: kept, deleted, incomplete removed, keys removed.
    """

    template_fields: tuple[str, ...] = (
        *StoreOperator.template_fields,
        "hosted_clusters",
        "key_prefix",
        "key_bucket",
        "keep_last",
        "keep_daily",
        "keep_weekly",
        "keep_monthly",
        "dry_run",
    )

    def __init__(
        self,
        *,
        hosted_clusters: Any,
        key_prefix: str = "hcp-etcd-keys",
        key_bucket: str | None = None,
        keep_last: int | str = 7,
        keep_daily: int | str = 7,
        keep_weekly: int | str = 4,
        keep_monthly: int | str = 6,
        dry_run: bool | str = False,
        incomplete_grace_minutes: float = 360,
        **kwargs: Any,
    ) -> None:
        """See the class docstring."""
        super().__init__(hosted_cluster="-/-", **kwargs)
        self.hosted_clusters = hosted_clusters
        self.key_prefix = key_prefix
        self.key_bucket = key_bucket
        self.keep_last = keep_last
        self.keep_daily = keep_daily
        self.keep_weekly = keep_weekly
        self.keep_monthly = keep_monthly
        self.dry_run = dry_run
        self.incomplete_grace_minutes = incomplete_grace_minutes

    def execute(self, context: Context) -> dict[str, Any]:
        """Plan and apply per cluster."""
        policy = RetentionPolicy(
            int(self.keep_last), int(self.keep_daily), int(self.keep_weekly), int(self.keep_monthly)
        )
        dry = self.dry_run in (True, "True", "true")
        summary = {}
        for ref in sorted({ClusterRef.parse(r) for r in (self.hosted_clusters or [])}):
            summary[str(ref)] = self._one(ref, policy, dry)
        return summary

    def _one(self, ref: ClusterRef, policy: RetentionPolicy, dry: bool) -> dict[str, Any]:
        bucket, prefix = str(self.bucket), validate_prefix(str(self.prefix))
        key_bucket = str(self.key_bucket or bucket)
        base = cluster_prefix(prefix, ref)
        now, grace = utcnow(), timedelta(minutes=float(self.incomplete_grace_minutes))
        dirs = group_backup_dirs(
            ((o.key, o.last_modified) for o in self.s3.list_objects(bucket, base + "/")), base
        )
        manifests: dict[str, dict[str, Any]] = {}
        incomplete = []
        for ts, d in dirs.items():
            if d.has_manifest:
                try:
                    manifests[ts] = validate_manifest(self.s3.get_json(bucket, f"{base}/{ts}/manifest.json"))
                    continue
                except (ManifestError, ValueError) as err:
                    self.log.warning("%s/%s: invalid manifest (%s): treated as incomplete", base, ts, err)
            incomplete.append((ts, d.last_modified or now))
        plan = plan_retention([Backup(parse_backup_ts(ts), ts) for ts in manifests], policy)
        dead = stale_incomplete(incomplete, now, grace)
        for ts in plan.delete:
            self.log.info(
                "%s %s: %s/%s (not kept by %s)", ref, "would delete" if dry else "deleting", base, ts, policy
            )
        for ts in dead:
            self.log.info(
                "%s %s incomplete backup %s/%s (no valid manifest)",
                ref,
                "would delete" if dry else "deleting",
                base,
                ts,
            )
        for ts, reasons in sorted(plan.keep.items()):
            self.log.info("%s keeping %s (%s)", ref, ts, ", ".join(reasons))
        referenced: set[str] = set()
        for ts in plan.keep:
            referenced |= referenced_key_objects(manifests[ts])
        key_base = encryption_key_key(validate_prefix(str(self.key_prefix)), ref, "0" * 64).rsplit("/", 1)[0]
        key_objects = [
            (f"s3://{key_bucket}/{o.key}", o.last_modified)
            for o in self.s3.list_objects(key_bucket, key_base + "/")
            if o.key.endswith(".key")
        ]
        # Keys of backups still in progress (or just failed) are younger than the grace: spared.
        drop_keys = unreferenced_keys(key_objects, referenced, now, grace)
        for loc in drop_keys:
            self.log.info(
                "%s %s key object %s (no remaining manifest refers to it)",
                ref,
                "would delete" if dry else "deleting",
                loc,
            )
        if not dry:
            self.s3.delete_keys(bucket, [k for ts in [*plan.delete, *dead] for k in dirs[ts].keys])
            self.s3.delete_keys(key_bucket, [loc.split("/", 3)[3] for loc in drop_keys])
        return {
            "kept": sorted(plan.keep),
            "deleted": plan.delete,
            "incomplete_deleted": dead,
            "keys_deleted": drop_keys,
            "dry_run": dry,
        }
