"""Publishing a verified backup: the manifest (last) and the Asset event."""

from __future__ import annotations

from typing import Any

from airflow.sdk import Asset, AssetAlias, Context

from hcp_etcd import metrics
from hcp_etcd.manifest import build_manifest, source_record
from hcp_etcd.naming import asset_name, asset_uri, manifest_key
from hcp_etcd.operators.base import StoreOperator, utcnow

BACKUP_ASSET_ALIAS = "hcp-etcd-backups"


class PublishManifestOperator(StoreOperator):
    """Write ``manifest.json`` next to the snapshot, after re-checking the snapshot object, and emit
    an Asset event for the cluster (through the ``hcp-etcd-backups`` alias; no secret in extras).

    :param snapshot: result of the snapshot task. (templated)
    :param verify: result of the verify task. (templated)
    :param upload: result of the upload task. (templated)
    :param escrow: result of the key escrow task. (templated)
    :param resume: result of the resume task (API downtime). (templated)
    :param mode: ``quiesced`` or ``online``. (templated)
    :return: ``{"manifest", "ts", "sha256"}``.
    """

    template_fields: tuple[str, ...] = (
        *StoreOperator.template_fields,
        "snapshot",
        "verify",
        "upload",
        "escrow",
        "resume",
        "mode",
    )

    def __init__(
        self,
        *,
        snapshot: Any,
        verify: Any,
        upload: Any,
        escrow: Any,
        resume: Any = None,
        mode: str = "quiesced",
        **kwargs: Any,
    ) -> None:
        """See the class docstring."""
        super().__init__(outlets=[AssetAlias(BACKUP_ASSET_ALIAS)], **kwargs)
        self.snapshot = snapshot
        self.verify = verify
        self.upload = upload
        self.escrow = escrow
        self.resume = resume
        self.mode = mode

    def _source(self) -> dict[str, Any]:
        """The cluster's HostedCluster and NodePool specs (what a restore rebuilds it from)."""
        from kubernetes.client.rest import ApiException

        hc = self.k8s.get_hosted_cluster(self.ref)
        try:
            pools: list[dict[str, Any]] | None = self.k8s.list_node_pools(self.ref)
        except ApiException as err:
            if err.status != 403:
                raise
            # A backup is worth more than its NodePools' record: publish it, and say what to grant.
            self.log.warning(
                "NodePools of %s not recorded (403: grant list on nodepools, include/rbac/10-backup.yaml)",
                self.ref,
            )
            pools = None
        return source_record(hc, pools)

    def execute(self, context: Context) -> dict[str, Any]:
        """Re-check, build, validate, write, announce."""
        ref = self.ref
        snap, verify, upload, escrow = self.snapshot, self.verify, self.upload, self.escrow
        resume = self.resume or {}
        bucket, prefix = self.store.bucket, self.store.prefix
        if self.s3.object_size(bucket, upload["key"]) != upload["size_bytes"]:
            raise RuntimeError(
                f"s3://{bucket}/{upload['key']} is missing or changed since upload: no manifest"
            )
        status = verify["status"]
        backup_key = escrow.get("backup_key") or {}
        manifest = build_manifest(
            namespace=ref.namespace,
            name=ref.name,
            created_at=snap["created_at"],
            mode=str(self.mode),
            bucket=bucket,
            snapshot_key=upload["key"],
            size_bytes=upload["size_bytes"],
            sha256=upload["sha256"],
            canonical_member=verify["canonical"],
            revision=status["revision"],
            etcd_hash=status["hash"],
            total_keys=status["total_keys"],
            total_size=status["total_size"],
            etcd_version=verify["etcd_version"],
            members=[
                {"pod": m["pod"], "revision": m["revision"], "hash": m["hash"]} for m in verify["members"]
            ],
            key_counts=verify["key_counts"],
            leased_key_counts=verify.get("leased_key_counts"),
            samples=verify.get("samples"),
            listed_at_revision=verify.get("listed_at_revision"),
            key_location=escrow["location"],
            key_sha256=escrow["sha256"],
            backup_key_location=backup_key.get("location"),
            backup_key_sha256=backup_key.get("sha256"),
            keys=escrow.get("keys"),
            service_account_key=escrow.get("service_account_key"),
            encryption=escrow.get("encryption"),
            api_downtime_seconds=resume.get("api_downtime_seconds"),
            dag_id=self.dag_id,
            run_id=self.run_id(context),
            sse=upload["sse"],
            backup_prefix=prefix,
            source=self._source(),
        )
        key = manifest_key(prefix, ref, snap["ts"])
        self.s3.put_json(manifest, bucket, key, self.kms)
        self.log.info("published s3://%s/%s", bucket, key)
        metrics.emit_backup(manifest, utcnow())  # never raises
        asset = Asset(name=asset_name(ref), uri=asset_uri(bucket, prefix, ref))
        context["outlet_events"][AssetAlias(BACKUP_ASSET_ALIAS)].add(
            asset,
            extra={
                "manifest": f"s3://{bucket}/{key}",
                "revision": status["revision"],
                "sha256": upload["sha256"],
                "size_bytes": upload["size_bytes"],
                "mode": str(self.mode),
            },
        )
        return {"manifest": f"s3://{bucket}/{key}", "ts": snap["ts"], "sha256": upload["sha256"]}
