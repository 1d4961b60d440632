"""Moving the snapshot from an etcd pod to S3."""

from __future__ import annotations

from typing import Any

from airflow.sdk import Context

from hcp_etcd import etcd
from hcp_etcd.hooks.hosted_cluster import ETCD_CONTAINER
from hcp_etcd.hooks.snapshot_store import MiB, SnapshotStoreHook
from hcp_etcd.naming import snapshot_key, validate_prefix
from hcp_etcd.operators.base import StoreOperator

METHODS = ("stream", "presigned-curl")


class SnapshotIntegrityError(RuntimeError):
    """The bytes in S3 are not the bytes in the pod."""


class SnapshotToS3Operator(StoreOperator):
    """Upload the canonical member's snapshot to ``{prefix}/{ns}/{name}/{ts}/snapshot.db``.

    ``stream`` (default): ``cat`` in the pod, streamed through the worker into an S3 multipart upload
    (boto3 transfer manager; memory ~ part size x concurrency, whatever the snapshot size), SHA-256
    computed on the way and compared with ``sha256sum`` run in the pod; progress logged every
    ``progress_every_mib``. No credential enters the pod.

    ``presigned-curl`` is the seam for uploading straight from the pod with a SigV4 presigned PUT
    (``SnapshotStoreHook.presign_put``): not enabled yet, because the URL must reach ``curl`` without
    appearing on its command line (stdin of the exec) and a single PUT caps at 5 GiB; a benchmark
    issue decides whether it is worth it.

    :param snapshot: result of the snapshot task (gives the backup timestamp ``ts``). (templated)
    :param verify: result of the verify task (gives the ``canonical`` pod to upload from). (templated)
    :param snapshot_path: the file in the etcd container.
    :param method: ``stream`` or ``presigned-curl``.
    :param part_size_mib: multipart part size.
    :param progress_every_mib: progress log interval.
    :param timeout: seconds the transfer may take.
    :return: ``{"bucket", "key", "size_bytes", "sha256", "seconds", "sse", "pod"}``.
    """

    template_fields: tuple[str, ...] = (*StoreOperator.template_fields, "snapshot", "verify")

    def __init__(
        self,
        *,
        snapshot: Any,
        verify: Any,
        snapshot_path: str = etcd.DEFAULT_SNAPSHOT_PATH,
        method: str = "stream",
        part_size_mib: int = 16,
        progress_every_mib: int = 64,
        timeout: float = 3600,
        **kwargs: Any,
    ) -> None:
        """See the class docstring."""
        super().__init__(**kwargs)
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}")
        self.snapshot = snapshot
        self.verify = verify
        self.snapshot_path = snapshot_path
        self.method = method
        self.part_size_mib = part_size_mib
        self.progress_every_mib = progress_every_mib
        self.timeout = timeout

    @property
    def s3(self) -> SnapshotStoreHook:  # type: ignore[override]
        """The S3 hook with this operator's part size."""
        return SnapshotStoreHook(aws_conn_id=self.aws_conn_id, part_size_mib=self.part_size_mib)

    def execute(self, context: Context) -> dict[str, Any]:
        """Hash in the pod, stream, compare; delete the object on mismatch."""
        if self.method != "stream":
            raise NotImplementedError(
                "presigned-curl upload is a designed seam, not enabled: use method=stream"
            )
        ref = self.ref
        ns, pod = ref.control_plane_namespace, str(self.verify["canonical"])
        bucket = str(self.bucket)
        key = snapshot_key(validate_prefix(str(self.prefix)), ref, str(self.snapshot["ts"]))
        pod_sha = etcd.parse_sha256sum(
            self.k8s.exec_command(
                ns, pod, etcd.sha256_command(self.snapshot_path), timeout=self.timeout
            ).stdout
        )
        s3 = self.s3

        def progress(done: int, seconds: float) -> None:
            self.log.info(
                "uploaded %d MiB of %s in %.0fs (%.1f MiB/s)",
                done // MiB,
                pod,
                seconds,
                done / MiB / max(seconds, 1e-6),
            )

        self.log.info("streaming %s:%s to s3://%s/%s", pod, self.snapshot_path, bucket, key)
        with self.k8s.open_exec(ns, pod, ["cat", self.snapshot_path], ETCD_CONTAINER, self.timeout) as stream:
            result = s3.upload_stream(stream, bucket, key, self.kms, progress, self.progress_every_mib * MiB)
            stream.drain()
            code = stream.returncode
        problem = None
        if code != 0:
            problem = (
                f"`cat {self.snapshot_path}` in {ns}/{pod} exited with {code}: {stream.stderr_tail[-500:]}"
            )
        elif result.sha256 != pod_sha:
            problem = f"SHA-256 streamed {result.sha256} != sha256sum in the pod {pod_sha}"
        elif s3.object_size(bucket, key) != result.size_bytes:
            problem = f"S3 reports a size other than the {result.size_bytes} bytes sent"
        if problem:
            s3.delete_keys(bucket, [key])
            raise SnapshotIntegrityError(
                f"upload of the snapshot of {ref} from {pod} failed its check "
                f"({problem}); the object was deleted, the task retry starts over"
            )
        self.log.info(
            "uploaded %d bytes in %.1fs (%.1f MiB/s), sha256 %s verified against the pod",
            result.size_bytes,
            result.seconds,
            result.size_bytes / MiB / max(result.seconds, 1e-6),
            result.sha256,
        )
        return {
            "bucket": bucket,
            "key": key,
            "size_bytes": result.size_bytes,
            "sha256": result.sha256,
            "seconds": round(result.seconds, 3),
            "sse": result.sse,
            "pod": pod,
        }
