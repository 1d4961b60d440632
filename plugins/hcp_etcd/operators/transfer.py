"""Moving the snapshot from an etcd pod to S3: streamed through the worker, or PUT from the pod."""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any

from airflow.sdk import Context

from hcp_etcd import etcd
from hcp_etcd.naming import snapshot_key
from hcp_etcd.operators.base import StoreOperator
from hcp_etcd.operators.kubernetes import KubernetesExecOperator

if TYPE_CHECKING:
    from hcp_etcd.hooks.snapshot_store import SnapshotStoreHook

METHODS = ("stream", "presigned-curl")
# The default chosen by measurement (BENCHMARKS.md, figures 2 and 3): the PUT from the pod is as fast
# as boto3's own upload_file and keeps the worker out of the data path; streaming is the fallback.
DEFAULT_METHOD = "presigned-curl"
# curl exit codes that mean "this pod cannot reach S3" (or has no curl): resolve, connect, proxy,
# TLS handshake/verification, send/receive failures, timeouts. 127: command not found.
EGRESS_EXIT_CODES = frozenset({5, 6, 7, 28, 35, 52, 55, 56, 60, 77, 127})
_RESULT_MARK = "hcp-etcd-curl:"
# The URL arrives on stdin (never in argv, so neither `ps` in the pod nor the API server's audit log
# sees it) and is handed to curl as a config file on its stdin by shell builtins (no new argv either).
_CURL_SCRIPT = (
    "command -v curl >/dev/null 2>&1 || { echo 'curl not found in this container' >&2; exit 127; }; "
    "IFS= read -r url || { echo 'no URL on stdin' >&2; exit 2; }; "
    'f=$1; shift; printf \'url = "%s"\\n\' "$url" | curl --config - --silent --show-error '
    '--retry 3 --retry-delay 2 --connect-timeout 20 --max-time "$MAXTIME" '
    '--upload-file "$f" "$@" --output - --write-out "\\n' + _RESULT_MARK + ' %{http_code} %{size_upload}\\n"'
)


class SnapshotIntegrityError(RuntimeError):
    """The bytes in S3 are not the bytes in the pod."""


class PresignedUploadUnavailable(RuntimeError):
    """The pod cannot upload by itself (no curl, no egress, too large for one PUT): stream instead."""


def curl_upload_command(path: str, headers: dict[str, str], max_seconds: float) -> list[str]:
    """argv of the in-pod upload: ``sh`` reading the URL from stdin, ``curl`` PUTting ``path``.

    The argv holds the file and the signed headers (no secret), never the URL.

    :param path: the snapshot in the container.
    :param headers: headers signed into the URL (``SnapshotStoreHook.put_headers``).
    :param max_seconds: curl's ``--max-time``.
    """
    header_args = [arg for name, value in headers.items() for arg in ("-H", f"{name}: {value}")]
    script = f"MAXTIME={int(max_seconds)}; {_CURL_SCRIPT}"
    return ["sh", "-c", script, "sh", path, *header_args]


def curl_stdin(url: str) -> bytes:
    """What the upload command reads on stdin: the URL, one line.

    :param url: the presigned URL.
    """
    if any(c in url for c in '"\\\n\r') or not url.startswith(("https://", "http://")):
        raise ValueError("a presigned URL has no quotes, backslashes or newlines and is http(s)")
    return url.encode() + b"\n"


def parse_curl_result(stdout: str) -> tuple[int, int, str]:
    """``(http status, bytes uploaded, response body)`` from the upload command's stdout.

    :param stdout: everything curl wrote (S3's answer, then the ``--write-out`` line).
    """
    found = list(re.finditer(rf"^{re.escape(_RESULT_MARK)} (\d+) ([\d.]+)\s*$", stdout, re.MULTILINE))
    if not found:
        raise ValueError(f"no result line from curl: {stdout[-300:]!r}")
    match = found[-1]
    return int(match.group(1)), int(float(match.group(2))), stdout[: match.start()].strip()


class SnapshotToS3Operator(StoreOperator, KubernetesExecOperator):
    """Upload the canonical member's snapshot to ``{prefix}/{ns}/{name}/{ts}/snapshot.db``.

    An S3 step whose checksums and ``curl`` run in the pod (through the KubernetesExec operator's
    exec path).

    Both methods hash the file in the pod first (``sha256sum``), check the object's size and SHA-256
    at the end, and delete the object when anything disagrees (the task retry starts over).

    ``stream``: ``cat`` in the pod, streamed through the worker into an S3 multipart upload (boto3
    transfer manager; memory ~ part size x concurrency, whatever the snapshot size), SHA-256 computed
    on the way and compared with the pod's. Works for any size and any pod; no credential enters it.

    ``presigned-curl``: the worker presigns one SigV4 PUT (``SnapshotStoreHook.presign_put``) with
    the pod's SHA-256 signed in as ``x-amz-checksum-sha256`` and a short expiry, and ``curl`` in the
    etcd container PUTs the file: the bytes do not pass through the worker. The URL reaches curl
    through the exec's stdin (``curl --config -``), never a command line, and is masked in logs; the
    pod holds no long-lived credential, only this URL for one object for ``presign_expiry`` seconds.
    S3 rejects a body with another SHA-256 (``BadDigest``); afterwards the stored checksum and size
    are compared with the pod's. Limits: one PUT carries at most 5 GiB, and the pod needs ``curl``
    and egress to S3. When one of those is missing, ``fallback_to_stream`` (default) streams instead
    and says why in the log; without it the task fails with that reason.

    :param snapshot: result of the snapshot task (gives the backup timestamp ``ts``). (templated)
    :param verify: result of the verify task (gives the ``canonical`` pod to upload from). (templated)
    :param snapshot_path: the file in the etcd container.
    :param method: ``presigned-curl`` (default, chosen by measurement: BENCHMARKS.md) or ``stream``.
        (templated)
    :param fallback_to_stream: on ``presigned-curl``, stream when the pod cannot upload by itself.
    :param presign_expiry: seconds the presigned URL lives (``presigned-curl``).
    :param part_size_mib: multipart part size (``stream``); worker memory is ~2 x this x 4. The
        default is S3's minimum: 10,000 parts of 5 MiB hold 48 GiB, six times etcd's 8 GiB quota.
    :param progress_every_mib: progress log interval (``stream``).
    :param timeout: seconds the transfer may take.
    :return: ``{"bucket", "key", "size_bytes", "sha256", "seconds", "sse", "pod", "method"}``.
    """

    template_fields: tuple[str, ...] = (*StoreOperator.template_fields, "snapshot", "verify", "method")

    def __init__(
        self,
        *,
        snapshot: Any,
        verify: Any,
        snapshot_path: str = etcd.DEFAULT_SNAPSHOT_PATH,
        method: str = DEFAULT_METHOD,
        fallback_to_stream: bool = True,
        presign_expiry: int = 3600,
        part_size_mib: int = 5,
        progress_every_mib: int = 64,
        timeout: float = 3600,
        **kwargs: Any,
    ) -> None:
        """See the class docstring."""
        super().__init__(timeout=timeout, **kwargs)
        if "{{" not in str(method) and method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}")
        self.snapshot = snapshot
        self.verify = verify
        self.snapshot_path = snapshot_path
        self.method = method
        self.fallback_to_stream = fallback_to_stream
        self.presign_expiry = presign_expiry
        self.part_size_mib = part_size_mib
        self.progress_every_mib = progress_every_mib

    def s3_hook_parameters(self) -> dict[str, Any]:
        """The S3 hook with this operator's part size."""
        return {**super().s3_hook_parameters(), "part_size_mib": self.part_size_mib}

    def execute(self, context: Context) -> dict[str, Any]:
        """Hash in the pod, upload by the chosen method, compare; delete the object on mismatch."""
        method = str(self.method)
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, not {method!r}")
        ref = self.ref
        ns, pod = ref.control_plane_namespace, str(self.verify["canonical"])
        bucket = self.store.bucket
        key = snapshot_key(self.store.prefix, ref, str(self.snapshot["ts"]))
        checksum = self.exec_in_pod(ns, pod, etcd.sha256_command(self.snapshot_path))
        pod_sha = etcd.parse_sha256sum(checksum.stdout)
        if method == "presigned-curl":
            try:
                return self._presigned_curl(ns, pod, bucket, key, pod_sha)
            except PresignedUploadUnavailable as err:
                if not self.fallback_to_stream:
                    raise
                self.log.warning("%s; falling back to method=stream", err)
        return self._stream(ns, pod, bucket, key, pod_sha)

    def _fail(self, s3: SnapshotStoreHook, bucket: str, key: str, pod: str, problem: str) -> None:
        s3.delete_objects(bucket, [key])
        raise SnapshotIntegrityError(
            f"upload of the snapshot of {self.ref} from {pod} failed its check "
            f"({problem}); the object was deleted, the task retry starts over"
        )

    def _returncode(self, stream: Any, s3: SnapshotStoreHook, bucket: str, key: str, pod: str) -> int:
        # A cut exec stream has no exit status: what reached S3 may be a prefix of the snapshot.
        from hcp_etcd.hooks.hosted_cluster import ExecError

        try:
            return int(stream.returncode)
        except ExecError as err:
            self._fail(s3, bucket, key, pod, str(err))
            raise  # _fail raised already; keeps type checkers sure

    def _result(
        self, bucket: str, key: str, size: int, sha: str, seconds: float, sse: str, pod: str, method: str
    ) -> dict[str, Any]:
        from hcp_etcd.hooks.snapshot_store import MiB

        self.log.info(
            "uploaded %d bytes by %s in %.1fs (%.1f MiB/s), sha256 %s verified against the pod",
            size,
            method,
            seconds,
            size / MiB / max(seconds, 1e-6),
            sha,
        )
        return {
            "bucket": bucket,
            "key": key,
            "size_bytes": size,
            "sha256": sha,
            "seconds": round(seconds, 3),
            "sse": sse,
            "pod": pod,
            "method": method,
        }

    def _stream(self, ns: str, pod: str, bucket: str, key: str, pod_sha: str) -> dict[str, Any]:
        from hcp_etcd.hooks.snapshot_store import MiB

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
        with self.open_exec_in_pod(ns, pod, ["cat", self.snapshot_path]) as stream:
            result = s3.upload_stream(stream, bucket, key, self.kms, progress, self.progress_every_mib * MiB)
            stream.drain()
            code = self._returncode(stream, s3, bucket, key, pod)
        if code != 0:
            self._fail(
                s3,
                bucket,
                key,
                pod,
                f"`cat {self.snapshot_path}` in {ns}/{pod} exited with {code}: {stream.stderr_tail[-500:]}",
            )
        elif result.sha256 != pod_sha:
            self._fail(
                s3, bucket, key, pod, f"SHA-256 streamed {result.sha256} != sha256sum in the pod {pod_sha}"
            )
        elif s3.object_size(bucket, key) != result.size_bytes:
            self._fail(
                s3, bucket, key, pod, f"S3 reports a size other than the {result.size_bytes} bytes sent"
            )
        return self._result(
            bucket, key, result.size_bytes, result.sha256, result.seconds, result.sse, pod, "stream"
        )

    def _presigned_curl(self, ns: str, pod: str, bucket: str, key: str, pod_sha: str) -> dict[str, Any]:
        # Imported here: the SDK's logging pulls in more than a DAG file's parse needs.
        from airflow.sdk.log import mask_secret

        from hcp_etcd.hooks.snapshot_store import SINGLE_PUT_LIMIT, sha256_b64

        size = int(self.exec_in_pod(ns, pod, etcd.size_command(self.snapshot_path), timeout=60).stdout)
        if size > SINGLE_PUT_LIMIT:
            raise PresignedUploadUnavailable(
                f"the snapshot is {size / 1024**3:.2f} GiB, above the 5 GiB a single presigned PUT "
                "takes: use method=stream (multipart)"
            )
        s3 = self.s3
        url = s3.presign_put(bucket, key, int(self.presign_expiry), self.kms, sha256=pod_sha)
        mask_secret(url)
        headers = s3.put_headers(self.kms, pod_sha)
        command = curl_upload_command(self.snapshot_path, headers, self.timeout)
        self.log.info("PUT from %s:%s to s3://%s/%s (presigned, SigV4)", pod, self.snapshot_path, bucket, key)
        started = time.monotonic()
        with self.open_exec_in_pod(ns, pod, command, timeout=float(self.timeout) + 60, stdin=True) as stream:
            stream.write_stdin(curl_stdin(url))
            out = stream.read(-1).decode("utf-8", "replace")
            code = self._returncode(stream, s3, bucket, key, pod)
        seconds = time.monotonic() - started
        if code in EGRESS_EXIT_CODES:
            s3.delete_objects(bucket, [key])
            raise PresignedUploadUnavailable(
                f"the etcd container of {ns}/{pod} could not upload by itself (exit {code}: "
                f"{stream.stderr_tail.strip()[-300:] or 'no stderr'}): without curl or egress to S3, "
                "use method=stream"
            )
        if code != 0:
            self._fail(
                s3, bucket, key, pod, f"curl in {ns}/{pod} exited with {code}: {stream.stderr_tail[-500:]}"
            )
        status, sent, body = parse_curl_result(out)
        if not 200 <= status < 300:
            # BadDigest (the bytes differ from the signed SHA-256), AccessDenied (expired URL, clock) ...
            self._fail(s3, bucket, key, pod, f"S3 answered {status} to the PUT: {body[-500:]}")
        stored = s3.object_checksum(bucket, key)
        if stored is None or stored[0] != size or sent != size:
            self._fail(
                s3,
                bucket,
                key,
                pod,
                f"{size} bytes in the pod, {sent} sent, S3 holds {stored[0] if stored else 'nothing'}",
            )
        elif stored[1] not in (None, sha256_b64(pod_sha)):
            self._fail(s3, bucket, key, pod, f"S3 stored checksum {stored[1]} for sha256 {pod_sha}")
        elif stored[1] is None:
            self.log.warning("S3 returned no SHA-256 checksum for s3://%s/%s: size checked only", bucket, key)
        sse = s3.sse_args(self.kms)["ServerSideEncryption"]
        return self._result(bucket, key, size, pod_sha, seconds, sse, pod, "presigned-curl")
