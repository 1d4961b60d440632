"""SnapshotStoreHook: snapshots, manifests and escrowed keys in S3, over the provider's S3Hook."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any, Protocol

from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

from hcp_etcd.naming import backup_location_key, backup_locations_prefix
from hcp_etcd.retention import ObjectLock, lock_blocking_delete

MiB = 1024 * 1024
BACKUP_LOCATION_KIND = "hcp-etcd-backup-location"
# S3 takes at most 5 GiB in one PUT (a presigned PUT cannot be multipart without one URL per part).
SINGLE_PUT_LIMIT = 5 * 1024 * MiB
# What S3 answers for an absent object: a HEAD has no body, so only its status ("404"); a GET says
# NoSuchKey. A GET from a missing bucket (NoSuchBucket) stays an error: it is a configuration one.
_ABSENT_CODES = frozenset({"404", "NoSuchKey", "NotFound"})


def _absent(err: ClientError) -> bool:
    """Whether S3 answered that the object is not there."""
    return err.response.get("Error", {}).get("Code") in _ABSENT_CODES


def sha256_b64(hex_digest: str) -> str:
    """A hex SHA-256 as S3 wants it in ``x-amz-checksum-sha256`` (base64 of the 32 bytes).

    :param hex_digest: 64 hex characters.
    """
    raw = bytes.fromhex(hex_digest)
    if len(raw) != 32:
        raise ValueError("a SHA-256 digest is 32 bytes")
    return base64.b64encode(raw).decode()


class Readable(Protocol):
    """Anything with ``read(n) -> bytes`` (an exec stream, a file)."""

    def read(self, size: int = -1) -> bytes:
        """Read up to ``size`` bytes."""
        ...


class HashingReader:
    """Wrap a stream: SHA-256 and byte count while boto3 reads it, progress every ``progress_every`` bytes.

    boto3 reads a non-seekable stream sequentially from one thread, so the digest is the object's.

    :param source: the stream.
    :param progress: called with (bytes so far, seconds so far) every ``progress_every`` bytes.
    :param progress_every: bytes between progress calls.
    """

    def __init__(
        self,
        source: Readable,
        progress: Callable[[int, float], None] | None = None,
        progress_every: int = 64 * MiB,
    ) -> None:
        self._source = source
        self._sha = hashlib.sha256()
        self.size = 0
        self._progress = progress
        self._every = max(1, progress_every)
        self._next = self._every
        self._started = time.monotonic()

    def read(self, size: int = -1) -> bytes:
        """Read, hashing what passes.

        :param size: bytes wanted.
        """
        data = self._source.read(size)
        self._sha.update(data)
        self.size += len(data)
        if self._progress and self.size >= self._next:
            self._progress(self.size, time.monotonic() - self._started)
            self._next = (self.size // self._every + 1) * self._every
        return data

    @property
    def sha256(self) -> str:
        """Hex digest of what was read so far."""
        return self._sha.hexdigest()

    @property
    def elapsed(self) -> float:
        """Seconds since the first byte was asked for."""
        return time.monotonic() - self._started


@dataclass(frozen=True)
class UploadResult:
    """An uploaded object.

    :param bucket: bucket.
    :param key: key.
    :param size_bytes: bytes uploaded.
    :param sha256: hex SHA-256 computed while streaming.
    :param seconds: duration.
    :param sse: the server-side encryption asked for.
    """

    bucket: str
    key: str
    size_bytes: int
    sha256: str
    seconds: float
    sse: str


@dataclass(frozen=True)
class StoredObject:
    """A listed object.

    :param key: its key.
    :param size: bytes.
    :param last_modified: when written.
    """

    key: str
    size: int
    last_modified: datetime


class SnapshotStoreHook(S3Hook):
    """S3 for hcp-etcd. SigV4 is forced whatever the connection says (SigV2 fails in newer regions).

    ``S3Hook``'s own helpers serve where they fit (``head_object``, ``check_for_key``,
    ``delete_objects``, ``iter_file_metadata``, ``generate_presigned_url``); the methods here add what
    it lacks: SSE-KMS per call, streamed and bounded reads, checksums, object versions and locks.

    :param aws_conn_id: the AWS connection (``aws_default``).
    :param part_size_mib: multipart part size; memory is about ``part_size * max_concurrency``.
    :param max_concurrency: parallel part uploads.
    :param s3_checksum: ask S3 to verify each part with SHA-256 (``ChecksumAlgorithm``).
    """

    def __init__(
        self,
        aws_conn_id: str = S3Hook.default_conn_name,
        part_size_mib: int = 16,
        max_concurrency: int = 4,
        s3_checksum: bool = True,
        **kwargs: Any,
    ) -> None:
        """Create the hook.

        :param aws_conn_id: the AWS connection id.
        :param part_size_mib: multipart part size in MiB (S3 needs >= 5).
        :param max_concurrency: parallel part uploads.
        :param s3_checksum: send per-part SHA-256 checksums.
        :param kwargs: passed to ``S3Hook``.
        """
        if part_size_mib < 5:
            raise ValueError("S3 multipart parts must be at least 5 MiB")
        super().__init__(aws_conn_id=aws_conn_id, **kwargs)
        self.part_size = part_size_mib * MiB
        self.max_concurrency = max_concurrency
        self.s3_checksum = s3_checksum
        self._versioned: dict[str, bool] = {}

    @cached_property
    def conn_config(self) -> Any:
        """The provider's connection wrapper, refusing a named connection that does not exist.

        The provider falls back to the worker's own credentials (instance profile, environment) when
        the connection is missing: right for ``aws_default``, which IRSA and instance-profile setups
        leave undefined, but a mistyped ``aws_conn_id`` would then write backups with whatever
        identity the worker has. A named one that is missing fails (a configuration error).
        """
        if self.aws_conn_id and self.aws_conn_id != self.default_conn_name:
            self.get_connection(self.aws_conn_id)  # raises AirflowNotFoundException
        return super().conn_config

    @property
    def config(self) -> Config:
        """The connection's botocore config with SigV4 forced on top."""
        base = self.conn_config.botocore_config or Config()
        return base.merge(Config(signature_version="s3v4"))

    @property
    def client(self) -> Any:
        """The boto3 S3 client (cached by the base hook)."""
        return self.get_conn()

    @staticmethod
    def sse_args(kms_key_id: str | None) -> dict[str, str]:
        """Server-side encryption arguments: SSE-KMS with ``kms_key_id``, else SSE-S3.

        :param kms_key_id: a KMS key id/ARN/alias or None.
        """
        if kms_key_id:
            return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key_id}
        return {"ServerSideEncryption": "AES256"}

    def upload_stream(
        self,
        source: Readable,
        bucket: str,
        key: str,
        kms_key_id: str | None = None,
        progress: Callable[[int, float], None] | None = None,
        progress_every: int = 64 * MiB,
    ) -> UploadResult:
        """Stream ``source`` into ``s3://bucket/key`` with multipart, hashing on the way.

        :param source: a readable stream (not seekable is fine).
        :param bucket: bucket.
        :param key: key.
        :param kms_key_id: SSE-KMS key, else SSE-S3.
        :param progress: called with (bytes, seconds) every ``progress_every`` bytes.
        :param progress_every: bytes between progress calls.
        """
        reader = HashingReader(source, progress, progress_every)
        extra = self.sse_args(kms_key_id)
        if self.s3_checksum:
            extra["ChecksumAlgorithm"] = "SHA256"
        transfer = TransferConfig(
            multipart_threshold=self.part_size,
            multipart_chunksize=self.part_size,
            max_concurrency=self.max_concurrency,
            use_threads=True,
        )
        # A non-seekable stream is read into memory part by part; s3transfer keeps up to 10 such parts
        # queued by default (10 x part size, measured: RSS +450 MiB for a 256 MiB snapshot). Queue no
        # more parts than can be in flight: memory ~ 2 x part size x concurrency, whatever the size.
        transfer.max_in_memory_upload_chunks = self.max_concurrency
        self.client.upload_fileobj(reader, bucket, key, ExtraArgs=extra, Config=transfer)  # type: ignore[arg-type]
        return UploadResult(
            bucket, key, reader.size, reader.sha256, reader.elapsed, extra["ServerSideEncryption"]
        )

    def object_size(self, bucket: str, key: str) -> int | None:
        """Size of an object, or None if absent.

        :param bucket: bucket.
        :param key: key.
        """
        head = self.head_object(key, bucket)
        return None if head is None else int(head["ContentLength"])

    # S3Hook.load_bytes/load_string cannot name a KMS key per call (only the hook-wide extra_args) and
    # HEAD the key first unless replace=True: one PUT with the run's SSE does it.
    def put_bytes(self, data: bytes, bucket: str, key: str, kms_key_id: str | None = None) -> None:
        """Write a small object with SSE.

        :param data: the bytes.
        :param bucket: bucket.
        :param key: key.
        :param kms_key_id: SSE-KMS key, else SSE-S3.
        """
        self.client.put_object(Bucket=bucket, Key=key, Body=data, **self.sse_args(kms_key_id))

    def put_json(self, data: dict[str, Any], bucket: str, key: str, kms_key_id: str | None = None) -> None:
        """Write a JSON document with SSE.

        :param data: the document.
        :param bucket: bucket.
        :param key: key.
        :param kms_key_id: SSE-KMS key, else SSE-S3.
        """
        body = json.dumps(data, indent=2, sort_keys=True).encode()
        self.client.put_object(
            Bucket=bucket, Key=key, Body=body, ContentType="application/json", **self.sse_args(kms_key_id)
        )

    # S3Hook.read_key loads the object (a HEAD) before its GET: two requests per manifest, and
    # retention reads every manifest of the fleet.
    def get_json(self, bucket: str, key: str) -> Any:
        """Read a JSON document.

        :param bucket: bucket.
        :param key: key.
        """
        body = self.client.get_object(Bucket=bucket, Key=key)["Body"].read()
        return json.loads(body)

    def list_objects(self, bucket: str, prefix: str) -> list[StoredObject]:
        """Every object under ``prefix`` (paginated).

        :param bucket: bucket.
        :param prefix: key prefix.
        """
        return [
            StoredObject(obj["Key"], int(obj["Size"]), obj["LastModified"])
            for obj in self.iter_file_metadata(prefix, bucket)
        ]

    def list_backup_objects(self, bucket: str, base: str) -> list[tuple[str, datetime]]:
        """(key, last modified) of every object under a cluster's ``{base}/``: what the backup
        directories are grouped from (:func:`hcp_etcd.retention.group_backup_dirs`).

        :param bucket: bucket.
        :param base: ``{prefix}/{ns}/{name}``, without the trailing slash.
        """
        return [(o.key, o.last_modified) for o in self.list_objects(bucket, base + "/")]

    def is_versioned(self, bucket: str) -> bool:
        """Whether the bucket keeps versions (always so with Object Lock); asked once per hook.

        :param bucket: bucket.
        """
        if bucket not in self._versioned:
            status = self.client.get_bucket_versioning(Bucket=bucket).get("Status")
            self._versioned[bucket] = status in ("Enabled", "Suspended")
        return self._versioned[bucket]

    def _versions_of(self, bucket: str, key: str) -> list[tuple[str | None, bool]]:
        """``(version id, is a delete marker)`` of every version of exactly ``key`` (S3Hook lists none)."""
        out: list[tuple[str | None, bool]] = []
        for page in self.client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=key):
            out += [(v["VersionId"], False) for v in page.get("Versions", []) if v["Key"] == key]
            out += [(v["VersionId"], True) for v in page.get("DeleteMarkers", []) if v["Key"] == key]
        return out

    def object_lock(self, bucket: str, key: str, version_id: str | None = None) -> ObjectLock:
        """The Object Lock state of an object version (``head_object`` reports it when the caller may
        read it: ``s3:GetObjectRetention`` and ``s3:GetObjectLegalHold``). S3Hook's ``head_object``
        takes no version id, hence the client's.

        :param bucket: bucket.
        :param key: key.
        :param version_id: the version (None: the current one).
        """
        args = {"VersionId": version_id} if version_id else {}
        head = self.client.head_object(Bucket=bucket, Key=key, **args)
        return ObjectLock(
            mode=head.get("ObjectLockMode"),
            retain_until=head.get("ObjectLockRetainUntilDate"),
            legal_hold=head.get("ObjectLockLegalHoldStatus") == "ON",
        )

    def delete_unless_locked(
        self, bucket: str, keys: list[str], now: datetime, bypass_governance: bool = False
    ) -> str | None:
        """Delete objects for good, in the order given, unless S3 Object Lock protects one of them.

        In a versioned bucket a plain delete only adds a delete marker: the object disappears from
        listings (and from restores) while every byte is kept. So every version is deleted, and
        nothing is when any version is still locked: a backup is kept whole or removed whole.
        ``S3Hook.delete_objects`` takes neither version ids nor the governance bypass, hence this.

        :param bucket: bucket.
        :param keys: the objects, in the order to delete them (a manifest first).
        :param now: the current time (to judge retention dates).
        :param bypass_governance: delete GOVERNANCE-locked versions too (never COMPLIANCE or a hold).
        :return: None when deleted, else why not (``"locked until …"``).
        """
        if not keys:
            return None
        if not self.is_versioned(bucket):
            self.delete_objects(bucket, keys[:1])  # the manifest on its own, first
            self.delete_objects(bucket, keys[1:])
            return None
        versions = {key: self._versions_of(bucket, key) for key in keys}
        locks = [
            self.object_lock(bucket, key, vid)
            for key, found in versions.items()
            for vid, marker in found
            if not marker
        ]
        blocked = lock_blocking_delete(locks, now, bypass_governance)
        if blocked:
            return blocked
        bypass = bypass_governance and any(lock.mode == "GOVERNANCE" for lock in locks)
        for key, found in versions.items():
            batch = [{"Key": key, "VersionId": vid} for vid, _ in found if vid]
            if not batch:
                continue
            extra = {"BypassGovernanceRetention": True} if bypass else {}
            resp = self.client.delete_objects(
                Bucket=bucket, Delete={"Objects": batch, "Quiet": True}, **extra
            )
            errors = resp.get("Errors") or []
            if errors and all(e.get("Code") == "AccessDenied" for e in errors):
                # A lock set after we looked (or a retention we may not read): keep what is left.
                return f"locked (S3 refused the delete of {key}: {errors[0].get('Message', 'AccessDenied')})"
            if errors:
                raise RuntimeError(f"S3 refused to delete some versions of {key}: {errors[:5]}")
        return None

    def check_writable(self, bucket: str, probe_key: str, kms_key_id: str | None = None) -> None:
        """Prove the bucket exists and takes writes and deletes as the run will write (a tiny probe
        object with the run's server-side encryption, so a bucket policy that requires SSE-KMS refuses
        the probe, not the upload after the API downtime), then remove it.

        In an Object Lock bucket the delete leaves a delete marker and the probe's 14 bytes stay under
        ``{prefix}/.probe/`` until the bucket's default retention ends: S3 cannot test a write without
        making one.

        :param bucket: bucket.
        :param probe_key: where to put the probe.
        :param kms_key_id: the run's SSE-KMS key, SSE-S3 when None.
        """
        try:
            self.client.put_object(
                Bucket=bucket, Key=probe_key, Body=b"hcp-etcd probe", **self.sse_args(kms_key_id)
            )
            self.client.delete_object(Bucket=bucket, Key=probe_key)
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "?")
            sse = f"SSE-KMS with key {kms_key_id!r}" if kms_key_id else "SSE-S3"
            raise RuntimeError(
                f"bucket {bucket!r} is not writable by this connection with {sse} ({code}): check the "
                "bucket name, its policy (and the KMS key policy) and the credentials of the AWS connection"
            ) from err

    def register_backup_location(
        self, key_bucket: str, key_prefix: str, bucket: str, prefix: str, kms_key_id: str | None = None
    ) -> None:
        """Record in the key store that backups under ``s3://bucket/prefix`` refer to its keys.

        Written once (before the first key of that location), read by key garbage collection.

        :param key_bucket: bucket of the keys.
        :param key_prefix: prefix of the keys.
        :param bucket: the backup bucket.
        :param prefix: the backup prefix.
        :param kms_key_id: SSE-KMS key, else SSE-S3.
        """
        key = backup_location_key(key_prefix, bucket, prefix)
        if not self.check_for_key(key, key_bucket):
            entry = {"kind": BACKUP_LOCATION_KIND, "bucket": bucket, "prefix": prefix.strip("/")}
            self.put_json(entry, key_bucket, key, kms_key_id)

    def backup_locations(
        self, key_bucket: str, key_prefix: str
    ) -> tuple[list[tuple[str, str]], datetime | None]:
        """Every backup location registered in a key store, and when the first was registered.

        :param key_bucket: bucket of the keys.
        :param key_prefix: prefix of the keys.
        :raises ValueError: an entry is not one of ours (key GC must not guess).
        """
        entries = self.list_objects(key_bucket, backup_locations_prefix(key_prefix))
        locations = []
        for obj in entries:
            entry = self.get_json(key_bucket, obj.key)
            if not (
                isinstance(entry, dict)
                and entry.get("kind") == BACKUP_LOCATION_KIND
                and isinstance(entry.get("bucket"), str)
                and isinstance(entry.get("prefix"), str)
            ):
                raise ValueError(f"s3://{key_bucket}/{obj.key} is not a backup-location entry")
            locations.append((entry["bucket"], entry["prefix"]))
        first = min((o.last_modified for o in entries), default=None)
        return sorted(set(locations)), first

    def presign_get(self, bucket: str, key: str, expires_in: int = 3600) -> str:
        """A SigV4 presigned GET URL (at most 7 days); raises instead of returning None.

        :param bucket: bucket.
        :param key: key.
        :param expires_in: seconds.
        """
        if not 1 <= expires_in <= 7 * 24 * 3600:
            raise ValueError("SigV4 presigned URLs live between 1 second and 7 days")
        url = self.generate_presigned_url("get_object", {"Bucket": bucket, "Key": key}, expires_in)
        if not url:
            raise RuntimeError(f"could not presign s3://{bucket}/{key}")
        return url

    def presign_put(
        self,
        bucket: str,
        key: str,
        expires_in: int = 3600,
        kms_key_id: str | None = None,
        sha256: str | None = None,
    ) -> str:
        """A SigV4 presigned PUT URL for an upload straight from the pod (``curl --upload-file``).

        The SSE headers and, with ``sha256``, ``x-amz-checksum-sha256`` are signed into the URL: the
        uploader must send exactly :meth:`put_headers`, and S3 rejects a body whose SHA-256 differs
        (``BadDigest``), so the URL can only store those bytes.

        :param bucket: bucket.
        :param key: key.
        :param expires_in: seconds (at most 7 days).
        :param kms_key_id: SSE-KMS key, else SSE-S3 (the uploader must send the same SSE headers).
        :param sha256: hex SHA-256 of the body, signed as ``ChecksumSHA256``.
        """
        if not 1 <= expires_in <= 7 * 24 * 3600:
            raise ValueError("SigV4 presigned URLs live between 1 second and 7 days")
        params = {"Bucket": bucket, "Key": key, **self.sse_args(kms_key_id)}
        if sha256:
            params["ChecksumSHA256"] = sha256_b64(sha256)
            # A bucket with Object Lock default retention takes a PUT only with Content-MD5 or
            # x-amz-sdk-checksum-algorithm (S3's PutObject reference); SDK uploads send the latter.
            params["ChecksumAlgorithm"] = "SHA256"
        url = self.generate_presigned_url("put_object", params, expires_in)
        if not url:
            raise RuntimeError(f"could not presign an upload to s3://{bucket}/{key}")
        return url

    @classmethod
    def put_headers(cls, kms_key_id: str | None = None, sha256: str | None = None) -> dict[str, str]:
        """The headers a PUT to a :meth:`presign_put` URL must carry (they are signed into it).

        :param kms_key_id: as given to ``presign_put``.
        :param sha256: as given to ``presign_put``.
        """
        headers = {"x-amz-server-side-encryption": cls.sse_args(kms_key_id)["ServerSideEncryption"]}
        if kms_key_id:
            headers["x-amz-server-side-encryption-aws-kms-key-id"] = kms_key_id
        if sha256:
            headers["x-amz-checksum-sha256"] = sha256_b64(sha256)
            headers["x-amz-sdk-checksum-algorithm"] = "SHA256"
        return headers

    def object_checksum(self, bucket: str, key: str) -> tuple[int, str | None] | None:
        """``(size, base64 SHA-256 checksum S3 stored or None)`` of an object; None if absent.

        :param bucket: bucket.
        :param key: key.
        """
        # S3Hook's head_object cannot ask for the checksum (ChecksumMode), hence the client's.
        try:
            head = self.client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        except ClientError as err:
            if _absent(err):
                return None
            raise
        return int(head["ContentLength"]), head.get("ChecksumSHA256")

    # ---- restore reads (added for the restore DAG) ----------------------------------------------
    # Bytes, streamed or bounded: S3Hook reads whole objects only, as text (read_key) or to a file.

    def sha256_object(
        self,
        bucket: str,
        key: str,
        chunk_size: int = 8 * MiB,
        progress: Callable[[int, float], None] | None = None,
        progress_every: int = 256 * MiB,
    ) -> tuple[int, str] | None:
        """Stream an object through SHA-256 in constant memory; ``(size, hex digest)``, None if absent.

        :param bucket: bucket.
        :param key: key.
        :param chunk_size: bytes per read.
        :param progress: called with (bytes, seconds) every ``progress_every`` bytes.
        :param progress_every: bytes between progress calls.
        """
        try:
            body = self.client.get_object(Bucket=bucket, Key=key)["Body"]
        except ClientError as err:
            if _absent(err):
                return None
            raise
        reader = HashingReader(body, progress, progress_every)
        try:
            while reader.read(chunk_size):
                pass
        finally:
            body.close()
        return reader.size, reader.sha256

    def get_small_object(self, bucket: str, key: str, max_bytes: int) -> bytes | None:
        """Read a small object whole (an escrowed key); None if absent, error if larger than ``max_bytes``.

        :param bucket: bucket.
        :param key: key.
        :param max_bytes: the most it may hold.
        """
        try:
            resp = self.client.get_object(Bucket=bucket, Key=key)
        except ClientError as err:
            if _absent(err):
                return None
            raise
        if int(resp.get("ContentLength", 0)) > max_bytes:
            resp["Body"].close()
            raise ValueError(f"s3://{bucket}/{key} is larger than {max_bytes} bytes")
        return resp["Body"].read(max_bytes + 1)

    # ---- the replica (a second bucket, another connection) ---------------------------------------

    def has_object(self, bucket: str, key: str, sha256: str) -> bool:
        """Whether ``s3://bucket/key`` holds exactly the bytes of that SHA-256: by S3's full-object
        checksum when it stored one, else (a multipart object's checksum of checksums) by reading it.

        :param bucket: bucket.
        :param key: key.
        :param sha256: hex SHA-256 of the bytes expected.
        """
        stored = self.object_checksum(bucket, key)
        if stored is None:
            return False
        if stored[1] == sha256_b64(sha256):
            return True
        if stored[1] is not None and "-" not in stored[1]:
            return False  # the full-object checksum of other bytes
        found = self.sha256_object(bucket, key)
        return found is not None and found[1] == sha256

    def copy_verified(
        self,
        source: SnapshotStoreHook,
        source_bucket: str,
        key: str,
        bucket: str,
        sha256: str,
        kms_key_id: str | None = None,
    ) -> bool:
        """Copy an object from another connection's bucket (streamed, multipart as :meth:`upload_stream`)
        unless this bucket already holds the same bytes; the bytes sent must have ``sha256``.

        Buckets in two regions or accounts cannot ``CopyObject`` between them with one set of
        credentials, so the bytes pass through this process, hashed on the way.

        :param source: the hook of the source bucket.
        :param source_bucket: the source bucket.
        :param key: the key, the same in both buckets.
        :param bucket: the destination bucket.
        :param sha256: hex SHA-256 the object must have (the manifest's).
        :param kms_key_id: SSE-KMS key of the destination, else SSE-S3.
        :return: True when copied, False when it was there already.
        :raises ValueError: the bytes read differ from ``sha256`` (the copy is deleted).
        """
        if self.has_object(bucket, key, sha256):
            return False
        body = source.client.get_object(Bucket=source_bucket, Key=key)["Body"]
        try:
            result = self.upload_stream(body, bucket, key, kms_key_id)
        finally:
            body.close()
        if result.sha256 != sha256:
            self.client.delete_object(Bucket=bucket, Key=key)
            raise ValueError(
                f"s3://{source_bucket}/{key} has SHA-256 {result.sha256}, not the manifest's {sha256}: "
                "not copied (the primary object changed or is damaged)"
            )
        return True
