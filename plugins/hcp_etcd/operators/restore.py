"""The steps of a restore (and of a drill) of one backup into a new HostedCluster, one operator each.

resolve the backup -> check the snapshot -> check the escrowed key -> presign -> create (keys filled
in this one task) -> wait (deferrable) -> verify. Every check before ``create`` refuses bad input
with a ``RestoreInputError``; ``create`` refuses an existing target and undoes its own partial
work before it raises. The encryption key and the presigned URL never go through XCom or a log.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import shutil
import signal
import subprocess
import time
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from airflow.sdk import Context
from airflow.sdk.bases.xcom import BaseXCom
from airflow.sdk.exceptions import TaskDeferred
from airflow.sdk.log import mask_secret
from airflow.sdk.module_loading import import_string

from hcp_etcd import aescbc, etcd, params, sakey
from hcp_etcd.encryption import target_kms_arns
from hcp_etcd.errors import RestoreInputError, describe, fail_fast_on_configuration_errors
from hcp_etcd.manifest import escrowed_keys, kms_key_arns, service_account_key
from hcp_etcd.naming import (
    ClusterRef,
    cluster_prefix,
    encryption_key_key,
    parse_rfc3339,
    rfc3339,
    service_account_key_key,
    validate_prefix,
)
from hcp_etcd.operators.base import StoreOperator, utcnow
from hcp_etcd.operators.kubernetes import KubernetesExecOperator
from hcp_etcd.params import StoreSettings
from hcp_etcd.restore.backups import (
    backup_candidates,
    check_manifest,
    key_entries,
    parse_s3_uri,
    parse_source,
)
from hcp_etcd.restore.plan import (
    RESTORED_BY_ANNOTATION,
    RestorePlan,
    availability_mismatch,
    check_identity_not_shared,
    check_target,
    clone_objects,
    drill_target_name,
    key_secret_names,
    load_objects,
    prepare_objects,
    recorded_objects,
    referenced_objects,
    release_mismatch,
    replicas_of,
    same_content,
)
from hcp_etcd.restore.presign import PresignedUrlInfo, check_presigned_url, check_url_expiry_hours
from hcp_etcd.restore.verify import (
    Check,
    check_kms_keys,
    check_members,
    check_revision,
    check_samples,
    check_secret_decrypts,
    check_secret_decrypts_kms,
    check_service_account_key,
    compare_key_counts,
    failed,
)

# An escrowed key is 32 bytes; anything much bigger is not a key.
_KEY_MAX_BYTES = 1024
# Rendered manifests are a few KiB; refuse to read a huge object into memory.
_MANIFESTS_MAX_BYTES = 4 * 1024 * 1024
_HCP_OPTION = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_HCP_RESERVED = {"name", "namespace", "render", "render-sensitive", "render-into"}
ERROR_XCOM_KEY = "error"
# Which service-account signing key a restored cluster gets: the backup's, or a new one (a drill's default).
SA_KEY_CHOICES = ("escrowed", "new")


def _sa_key_choice(value: Any) -> str:
    if str(value) not in SA_KEY_CHOICES:
        raise RestoreInputError(f"service_account_key must be one of {SA_KEY_CHOICES}, got {value!r}")
    return str(value)


def drill_moment(context: Context) -> datetime:
    """The run's data interval end (a backfilled date), or now for a manual run without one.

    :param context: task context.
    """
    end = context.get("data_interval_end") or context.get("logical_date")
    return end.astimezone(UTC) if end else utcnow()


def step_error(outcome: Any) -> str | None:
    """The error of a failed restore step from its XCom return value (see ``RestoreStepOperator``),
    None for a result or for a step that pushed nothing.

    :param outcome: the step's XCom return value.
    """
    if isinstance(outcome, dict) and set(outcome) == {ERROR_XCOM_KEY}:
        return str(outcome[ERROR_XCOM_KEY])
    return None


class RestoreStepOperator(StoreOperator):
    """Base of the restore steps: a failure's redacted message is the step's outcome.

    A failed step's XCom return value is ``{"error": "<task>: <message>"}`` (:func:`step_error`):
    the drill's report runs after failed steps (``all_done``) and reads each step's outcome from its
    XComArg, which resolves to None for a step that pushed nothing but raises ``XComNotFound`` for
    any other key (``airflow.sdk`` ``PlainXComArg.resolve``). The same message is kept as XCom
    ``error``, where a person reading a failed restore in the UI finds it.

    :param backup: the result of ``ResolveBackupOperator`` (templated: its XCom). Not needed by it.
    :param presign_aws_conn_id: the AWS connection that signs ``restoreSnapshotURL`` (empty: the
        ``aws_conn_id``). Role credentials (an instance profile, IRSA) always add a session token,
        which makes a SigV4 URL longer than HyperShift's 1024 characters: presign with the
        long-term keys of an IAM user that may only read snapshots (``include/aws/presign-user.json``).
        (templated)
    """

    template_fields: tuple[str, ...] = (*StoreOperator.template_fields, "backup", "presign_aws_conn_id")

    def __init__(self, *, backup: Any = None, presign_aws_conn_id: str | None = None, **kwargs: Any) -> None:
        """See the class docstring."""
        super().__init__(**kwargs)
        self.backup = backup
        self.presign_aws_conn_id = presign_aws_conn_id

    @cached_property
    def presign_s3(self) -> Any:
        """The S3 hook that signs the snapshot's URL (the presigning connection, else ``s3``)."""
        if not self.presign_aws_conn_id:
            return self.s3
        return import_string(self.s3_hook_class)(aws_conn_id=str(self.presign_aws_conn_id))

    @fail_fast_on_configuration_errors
    def execute(self, context: Context) -> Any:
        """Run the step; on failure push its redacted message and re-raise (bad input: no retries)."""
        try:
            return self.run(context)
        except TaskDeferred:
            raise
        except Exception as err:
            self.record_error(context, err)
            raise

    def record_error(self, context: Context, err: BaseException) -> None:
        """Push a failure's message as the step's outcome (and XCom ``error``), redacted: XCom is
        clear text in the metadata DB, and a client's message can quote a presigned URL or Secret data.

        :param context: task context.
        :param err: the failure.
        """
        message = f"{self.task_id}: {describe(err)}"
        context["ti"].xcom_push(key=ERROR_XCOM_KEY, value=message)
        context["ti"].xcom_push(key=BaseXCom.XCOM_RETURN_KEY, value={ERROR_XCOM_KEY: message})

    def run(self, context: Context) -> Any:
        """The step itself.

        :param context: task context.
        """
        raise NotImplementedError

    @property
    def manifest(self) -> dict[str, Any]:
        """The resolved manifest."""
        return self.backup["manifest"]

    @property
    def target(self) -> ClusterRef:
        """The new HostedCluster."""
        return ClusterRef.parse(self.backup["target"])

    def _read_escrowed(self, entry: dict[str, str], max_bytes: int, without: str) -> bytes:
        """Read an escrowed object and check it against the manifest's SHA-256 (masked at once)."""
        bucket, key = parse_s3_uri(entry["location"])
        raw = self.s3.get_small_object(bucket, key, max_bytes)
        if raw is None:
            raise RestoreInputError(f"the escrowed key object {entry['location']} does not exist: {without}")
        mask_secret(base64.b64encode(raw).decode())
        digest = hashlib.sha256(raw).hexdigest()
        if digest != entry["sha256"]:
            raise RestoreInputError(
                f"the key object {entry['location']} has sha256 {digest}, the manifest says "
                f"{entry['sha256']}: refusing a key that is not the backed-up one"
            )
        return raw

    def read_service_account_key(self, entry: dict[str, str]) -> bytes:
        """Read the escrowed service-account signing key and check it against both of the manifest's
        fingerprints (the object's, its public key's). The caller keeps it local.

        :param entry: the manifest's ``service_account_key``.
        """
        raw = self._read_escrowed(
            entry, sakey.MAX_BYTES, "without it the restored cluster signs with a new key and every "
            "service-account token of the backed-up cluster is rejected",
        )  # fmt: skip
        mask_secret(raw.decode("ascii", "replace"))
        try:
            public_sha256 = sakey.private_key_fingerprint(raw)
        except sakey.ServiceAccountKeyError as err:
            raise RestoreInputError(f"the key object {entry['location']} is {err}") from None
        if public_sha256 != entry["public_key_sha256"]:
            raise RestoreInputError(
                f"the key object {entry['location']} has a public key of sha256 {public_sha256}, the "
                f"manifest says {entry['public_key_sha256']}"
            )
        return raw

    def read_key(self, entry: dict[str, str]) -> bytes:
        """Read an escrowed key and check it against the manifest's fingerprint. The caller keeps it local.

        :param entry: ``{"location", "sha256"}`` from the manifest.
        """
        raw = self._read_escrowed(
            entry, _KEY_MAX_BYTES, "without the key the restored cluster cannot read its Secrets"
        )
        if len(raw) != 32:
            raise RestoreInputError(
                f"the key object {entry['location']} holds {len(raw)} bytes, not a 32-byte AES-256 key"
            )
        return raw

    def presign(self, hours: int) -> tuple[str, PresignedUrlInfo]:
        """Presign the snapshot (SigV4, forced by the hook) and check it against HyperShift's rules.

        :param hours: expiry in hours (1..168).
        """
        snap = self.manifest["snapshot"]
        seconds = check_url_expiry_hours(hours) * 3600
        url = self.presign_s3.presign_get(snap["bucket"], snap["key"], seconds)
        # The signature is a bearer credential: never in a log line.
        mask_secret(url)
        return url, check_presigned_url(url, utcnow())


class ResolveBackupOperator(RestoreStepOperator):
    """Find and validate the manifest to restore; name and check the target.

    ``source`` is a manifest URI, or ``namespace/name``: the newest complete backup (valid manifest)
    of that cluster at or before ``at_or_before`` (default: the run's data interval end, else now).
    The target is ``target_namespace/target_name``; without ``target_name`` it is the drill's
    ``<name>-drill-<YYYYMMDD>``. An existing target HostedCluster is refused (restore happens only at
    creation).

    :param source: manifest URI or ``namespace/name``. (templated)
    :param at_or_before: RFC3339 cutoff for ``namespace/name``; empty: data interval end or now. (templated)
    :param target_namespace: namespace of the new HostedCluster. (templated)
    :param target_name: its name; empty for a drill name. (templated)
    :param source_bucket: ``primary`` or ``replica``: which copy ``bucket`` is (the DAG renders the
        replica's bucket and connection into ``bucket``/``aws_conn_id`` for ``replica``). (templated)
    :param replica_bucket: the replica, named when the primary cannot be read. (templated)
    :return: ``{"manifest_uri", "manifest", "source", "target", "as_of"}`` (no secrets).
    """

    template_fields: tuple[str, ...] = (
        *RestoreStepOperator.template_fields,
        "source",
        "at_or_before",
        "target_namespace",
        "target_name",
        "source_bucket",
        "replica_bucket",
    )

    def __init__(
        self,
        *,
        source: str,
        at_or_before: str | None = None,
        target_namespace: str,
        target_name: str | None = None,
        source_bucket: str = "primary",
        replica_bucket: str | None = None,
        **kwargs: Any,
    ) -> None:
        """See the class docstring."""
        super().__init__(**kwargs)
        self.source_bucket = source_bucket
        self.replica_bucket = replica_bucket
        self.source = source
        self.at_or_before = at_or_before
        self.target_namespace = target_namespace
        self.target_name = target_name

    def run(self, context: Context) -> dict[str, Any]:
        """Resolve, validate, check the target."""
        params.check_settings()
        if str(self.source_bucket) == "replica" and not self.bucket:
            raise RestoreInputError(
                "source_bucket=replica but no replica_bucket is set: give the bucket the backup DAG copies "
                f"to (replica_bucket, or {params.REPLICA_BUCKET_ENV} in the Airflow environment)"
            )
        store = self.store  # before anything is read: a missing bucket fails here, saying what to set
        as_of = parse_rfc3339(str(self.at_or_before)) if self.at_or_before else drill_moment(context)
        src = parse_source(str(self.source))
        try:
            if src.manifest_uri:
                uri = src.manifest_uri
                manifest = check_manifest(self._get_manifest(uri), uri)
            else:
                uri, manifest = self._newest(store, src.cluster, as_of)  # type: ignore[arg-type]
        except (RestoreInputError, *_read_errors()) as err:
            raise self._unreadable(err, store) from err
        hc = manifest["hosted_cluster"]
        source_ref = ClusterRef(hc["namespace"], hc["name"])
        name = str(self.target_name) if self.target_name else drill_target_name(source_ref.name, as_of)
        target = check_target(str(self.target_namespace), name)
        if self.k8s.hosted_cluster_exists(target):
            raise RestoreInputError(
                f"HostedCluster {target} already exists: a restore only happens when a cluster "
                "is created; choose another target name or delete it first"
            )
        self.log.info(
            "restoring %s (snapshot s3://%s/%s, revision %s, created %s) as %s",
            uri,
            manifest["snapshot"]["bucket"],
            manifest["snapshot"]["key"],
            manifest["etcd"]["revision"],
            manifest["created_at"],
            target,
        )
        return {
            "manifest_uri": uri,
            "manifest": manifest,
            "source": str(source_ref),
            "target": str(target),
            "as_of": rfc3339(as_of),
        }

    def _unreadable(self, err: Exception, store: StoreSettings) -> Exception:
        """A failed read of the primary, saying so and naming the replica (a bad manifest stays as is)."""
        if str(self.source_bucket) == "replica":
            if isinstance(err, RestoreInputError):
                return err
            return RestoreInputError(
                f"the replica bucket s3://{store.bucket} cannot be read ({describe(err, 300)}): check "
                "replica_bucket, its region and the credentials of replica_aws_conn_id"
            )
        missing = isinstance(err, BackupNotFoundError)
        if isinstance(err, RestoreInputError) and not missing:
            return err
        what = (
            str(err)
            if missing
            else f"the primary bucket s3://{store.bucket} cannot be read ({describe(err, 300)})"
        )
        if self.replica_bucket:
            hint = (
                f"the replica s3://{self.replica_bucket} has copies of the backups: run again with "
                "source_bucket=replica (a manifest URI in source: the same key in the replica bucket)"
            )
        else:
            hint = "no replica_bucket is set: check the bucket, its region and the AWS connection"
        return RestoreInputError(f"{what}; {hint}")

    def _get_manifest(self, uri: str) -> Any:
        bucket, key = parse_s3_uri(uri)
        if self.s3.object_size(bucket, key) is None:
            raise BackupNotFoundError(f"{uri} does not exist")
        try:
            return self.s3.get_json(bucket, key)
        except ValueError as err:
            raise RestoreInputError(f"{uri} is not JSON: {err}") from None

    def _newest(self, store: StoreSettings, ref: ClusterRef, as_of: datetime) -> tuple[str, dict[str, Any]]:
        bucket, base = store.bucket, cluster_prefix(store.prefix, ref)
        for ts in backup_candidates(self.s3.list_backup_objects(bucket, base), base, as_of):
            uri = f"s3://{bucket}/{base}/{ts}/manifest.json"
            try:
                return uri, check_manifest(self._get_manifest(uri), uri, ref)
            except RestoreInputError as err:
                # An incomplete or foreign manifest is not a backup: the next older one may be.
                self.log.warning("skipping %s: %s", uri, err)
        raise BackupNotFoundError(
            f"no complete backup of {ref} at or before {rfc3339(as_of)} under s3://{bucket}/{base}/"
        )


class BackupNotFoundError(RestoreInputError):
    """The bucket has no such backup (another copy may have it)."""


def _read_errors() -> tuple[type[Exception], ...]:
    # botocore is imported when a task runs, not when a DAG file imports this module (parse time).
    from botocore.exceptions import BotoCoreError, ClientError

    return ClientError, BotoCoreError


class CheckSnapshotOperator(RestoreStepOperator):
    """The snapshot object exists, has the manifest's size and SHA-256 (streamed, constant memory).

    :return: ``{"size_bytes", "sha256", "seconds"}``.
    """

    def run(self, context: Context) -> dict[str, Any]:
        """Stream and compare."""
        snap = self.manifest["snapshot"]
        where = f"s3://{snap['bucket']}/{snap['key']}"
        size = self.s3.object_size(snap["bucket"], snap["key"])
        if size is None:
            raise RestoreInputError(f"the snapshot {where} does not exist")
        if size != snap["size_bytes"]:
            raise RestoreInputError(
                f"the snapshot {where} has {size} bytes, the manifest says {snap['size_bytes']}"
            )
        started = time.monotonic()
        result = self.s3.sha256_object(
            snap["bucket"],
            snap["key"],
            progress=lambda done, secs: self.log.info("hashed %d/%d bytes in %.0fs", done, size, secs),
        )
        if result is None:
            raise RestoreInputError(f"the snapshot {where} disappeared while being read")
        _, digest = result
        if digest != snap["sha256"]:
            raise RestoreInputError(
                f"the snapshot {where} has sha256 {digest}, the manifest says {snap['sha256']}: "
                "it is corrupt or was replaced; restore another backup"
            )
        seconds = time.monotonic() - started
        self.log.info(
            "snapshot %s: %d bytes, sha256 %s matches the manifest (%.1fs)", where, size, digest, seconds
        )
        return {"size_bytes": size, "sha256": digest, "seconds": round(seconds, 3)}


class CheckKeyOperator(RestoreStepOperator):
    """The escrowed key object(s) exist where the backup DAG puts them and match the manifest's fingerprint.

    The service-account signing key too (``{key_prefix}/{ns}/{name}/sa-signing-key/{sha256}.key``,
    its object's and its public key's fingerprints), when the backup escrowed one.

    :param key_prefix: the escrow prefix; the manifest's key must be ``{key_prefix}/{ns}/{name}/{sha256}.key``
        (a manifest cannot make a restore write an arbitrary object into a Secret). (templated)
    :return: ``{role: fingerprint}`` of the keys the restored cluster gets (``activeKey``, ``backupKey``).
    """

    template_fields: tuple[str, ...] = (*RestoreStepOperator.template_fields, "key_prefix")

    def __init__(self, *, key_prefix: str = "hcp-etcd/keys", **kwargs: Any) -> None:
        """See the class docstring."""
        super().__init__(**kwargs)
        self.key_prefix = key_prefix

    def run(self, context: Context) -> dict[str, str]:
        """Read, fingerprint, forget."""
        out = {}
        source = ClusterRef.parse(self.backup["source"])
        key_prefix = validate_prefix(str(self.key_prefix))  # the only setting this step reads
        arns = kms_key_arns(self.manifest)
        if arns is not None:
            self.log.info(
                "%s encrypts Secrets with AWS KMS key(s) %s: no key was escrowed, the restored cluster "
                "must use the same key(s) (checked when its manifests are built)",
                source, ", ".join(arns),
            )  # fmt: skip
        # Every escrowed key (a backup taken mid-rotation has two), not only the two a restore installs.
        for entry in escrowed_keys(self.manifest):
            roles = ", ".join(entry["roles"])
            _, key = parse_s3_uri(entry["location"])
            expected = encryption_key_key(key_prefix, source, entry["sha256"])
            if key != expected:
                raise RestoreInputError(
                    f"the manifest's key {entry['location']} ({roles}) is not the escrow object "
                    f"{expected} under key_prefix {self.key_prefix!r}"
                )
            raw = self.read_key(entry)
            name = aescbc.kas_key_name(raw)
            del raw
            if entry["kas_key_name"] not in (None, name):
                raise RestoreInputError(
                    f"the key object {entry['location']} is kube-apiserver key {name}, the manifest "
                    f"says {entry['kas_key_name']}"
                )
            self.log.info(
                "%s (%s) %s matches fingerprint %s", name, roles, entry["location"], entry["sha256"]
            )
        sa_key = service_account_key(self.manifest)
        if sa_key is not None:
            _, key = parse_s3_uri(sa_key["location"])
            expected = service_account_key_key(key_prefix, source, sa_key["sha256"])
            if key != expected:
                raise RestoreInputError(
                    f"the manifest's service-account key {sa_key['location']} is not the escrow object "
                    f"{expected} under key_prefix {self.key_prefix!r}"
                )
            self.read_service_account_key(sa_key)
            self.log.info(
                "service-account signing key %s matches fingerprint %s (public key sha256 %s)",
                sa_key["location"], sa_key["sha256"], sa_key["public_key_sha256"],
            )  # fmt: skip
        else:
            self.log.warning(
                "this backup has no escrowed service-account signing key (taken by an older release): "
                "the restored cluster gets a new one and tokens of %s will not validate",
                source,
            )
        for role, entry in key_entries(self.manifest).items():
            out[role] = entry["sha256"]
        return out


class PresignSnapshotOperator(RestoreStepOperator):
    """Presign a SigV4 GET URL and check it (<= 1024 chars, SigV4, not expiring soon).

    The URL itself is not returned (a bearer credential): the create task presigns again with the
    same settings and checks again.

    :param url_expiry_hours: expiry, 1..168. (templated)
    :return: ``{"length", "expires_at", "session_token"}``.
    """

    template_fields: tuple[str, ...] = (*RestoreStepOperator.template_fields, "url_expiry_hours")

    def __init__(self, *, url_expiry_hours: int | str = 4, **kwargs: Any) -> None:
        """See the class docstring."""
        super().__init__(**kwargs)
        self.url_expiry_hours = url_expiry_hours

    def run(self, context: Context) -> dict[str, Any]:
        """Presign and check."""
        _, info = self.presign(self.url_expiry_hours)
        self.log.info(
            "presigned SigV4 URL: %d characters, expires %s%s",
            info.length,
            info.expires_at,
            " (STS session token)" if info.session_token else "",
        )
        return {"length": info.length, "expires_at": info.expires_at, "session_token": info.session_token}


class CreateRestoredClusterOperator(RestoreStepOperator):
    """Build the objects of the restore and create them; the escrowed key goes into its Secret here.

    Manifests come from, in this order: ``rendered_manifests`` (``s3://`` URI or a file path of the
    output of ``hcp create cluster aws --render --render-sensitive``), ``render_options`` (run that
    command, when ``hcp`` is on PATH), or ``clone`` (the live source HostedCluster: a drill). Rendered
    manifests are applied as rendered and must be rendered for the target (``prepare_objects``), and
    must not carry the live source's infraID; a clone is given an identity of its own
    (``clone_objects``). A controller availability policy other than the backed-up cluster's is
    warned about in the task log. Every check runs before the first write; an object that exists
    already is refused; on a failure midway the objects created are deleted again before the error
    is raised (``HostedClusterHook.create_objects``).

    :param rendered_manifests: S3 URI or path of rendered YAML. (templated)
    :param render_options: ``hcp create cluster aws`` flags (``{"pull-secret": path}``). (templated)
    :param clone: clone the source HostedCluster instead (control plane only).
    :param url_expiry_hours: presigned URL expiry, 1..168. (templated)
    :param service_account_key: ``escrowed`` (the backup's service-account signing key, in the
        ``spec.serviceAccountSigningKey`` Secret: tokens of the lost cluster still validate) or
        ``new`` (HyperShift generates one: a drill's default). (templated)
    :return: ``{"target", "created", "created_at", "url_expires_at"}``.
    """

    template_fields: tuple[str, ...] = (
        *RestoreStepOperator.template_fields,
        "rendered_manifests",
        "render_options",
        "url_expiry_hours",
        "service_account_key",
    )

    def __init__(
        self,
        *,
        rendered_manifests: str | None = None,
        render_options: dict[str, Any] | None = None,
        clone: bool = False,
        url_expiry_hours: int | str = 4,
        service_account_key: str = "escrowed",
        **kwargs: Any,
    ) -> None:
        """See the class docstring."""
        super().__init__(**kwargs)
        self.rendered_manifests = rendered_manifests
        self.render_options = render_options
        self.clone = clone
        self.url_expiry_hours = url_expiry_hours
        self.service_account_key = service_account_key
        self._render_process: subprocess.Popen[str] | None = None

    def on_kill(self) -> None:
        """Also end a running ``hcp`` render (and whatever it started)."""
        super().on_kill()
        proc = self._render_process
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

    def run(self, context: Context) -> dict[str, Any]:
        """Check everything, then create in order."""
        from hcp_etcd.hooks.hosted_cluster import ObjectExistsError

        target = self.target
        url, info = self.presign(self.url_expiry_hours)
        objects, copies = self._load_objects(target)
        restored_by = f"{self.dag_id}/{context['run_id']}"
        escrowed_sa_key = _sa_key_choice(self.service_account_key) == "escrowed"
        plan = prepare_objects(
            objects, target, url, self.manifest, self.backup["manifest_uri"], restored_by, escrowed_sa_key
        )
        plan.copies = copies
        for mismatch in (
            availability_mismatch(plan.hosted_cluster, self.manifest),
            release_mismatch(plan.hosted_cluster, self.manifest),
        ):
            if mismatch:
                self.log.warning("%s", mismatch)
        adopted, reused = self._refuse_existing(plan, restored_by)
        self._require_referenced(plan)
        # Keys (and copied secrets) go into the objects last, right before the writes, in this task only.
        for role, entry in key_entries(self.manifest).items():
            if role in plan.key_secrets and plan.key_secrets[role] not in reused:
                plan.fill_key(role, self.read_key(entry))
        sa_key = service_account_key(self.manifest)
        if plan.sa_key_secret is not None and sa_key is not None and plan.sa_key_secret not in reused:
            plan.fill_service_account_key(self.read_service_account_key(sa_key))
        self._copy_referenced(plan)
        created_at = utcnow()
        try:
            created = self.k8s.create_objects(plan.objects, adopted)
        except ObjectExistsError as err:
            raise RestoreInputError(f"{err.what} appeared meanwhile: refusing to overwrite it") from None
        self.log.info(
            "created %s from %s (snapshot URL expires %s)",
            ", ".join(plan.summary()),
            self.backup["manifest_uri"],
            info.expires_at,
        )
        return {
            "target": str(target),
            "created": created,
            "created_at": rfc3339(created_at),
            "created_ts": created_at.timestamp(),
            "url_expires_at": info.expires_at,
        }

    def _load_objects(self, target: ClusterRef) -> tuple[list[dict[str, Any]], dict[tuple[str, str], str]]:
        source = ClusterRef.parse(self.backup["source"])
        if self.rendered_manifests or self.render_options:
            if self.rendered_manifests:
                where = str(self.rendered_manifests)
                objects = load_objects(self._read_rendered(where), where)
            else:
                objects = load_objects(self._render_with_hcp(target), "hcp create cluster aws --render")
            for hc in (o for o in objects if o["kind"] == "HostedCluster"):
                check_identity_not_shared(hc, self.k8s.find_hosted_cluster(source))
            return objects, {}
        if self.clone:
            hc = self.k8s.find_hosted_cluster(source)
            if hc is None:
                raise RestoreInputError(
                    f"cannot clone {source} for the drill: it no longer exists; restore "
                    "with rendered manifests instead"
                )
            clone = clone_objects(hc, target)
            # What keeps the drill from colliding with its source: a person reading the run sees it.
            for change in clone.changes:
                self.log.info("drill clone of %s: %s", source, change)
            return clone.objects, clone.copies
        # Neither a file nor a render: the cluster as its backup recorded it, under its own name.
        objects = recorded_objects(self.manifest, target)
        for hc in (o for o in objects if o["kind"] == "HostedCluster"):
            check_identity_not_shared(hc, self.k8s.find_hosted_cluster(source))
        self.log.info("restoring %s from the HostedCluster and NodePool specs its backup recorded", target)
        return objects, {}

    def _read_rendered(self, where: str) -> str:
        if where.startswith("s3://"):
            bucket, key = parse_s3_uri(where)
            data = self.s3.get_small_object(bucket, key, _MANIFESTS_MAX_BYTES)
            if data is None:
                raise RestoreInputError(f"rendered manifests {where} do not exist")
            return data.decode("utf-8")
        path = Path(where)
        if not path.is_file():
            raise RestoreInputError(f"rendered manifests file {where} does not exist on this worker")
        if path.stat().st_size > _MANIFESTS_MAX_BYTES:
            raise RestoreInputError(f"{where} is larger than {_MANIFESTS_MAX_BYTES} bytes")
        return path.read_text(encoding="utf-8")

    def _render_with_hcp(self, target: ClusterRef) -> str:
        hcp = shutil.which("hcp")
        if not hcp:
            # The image ships none (no package registry serves it, and it must match the management
            # cluster's HyperShift): the deployment files provide it in /opt/hcp-etcd/bin.
            raise RestoreInputError(
                "render_options need the `hcp` CLI on the worker's PATH, and this worker has none. "
                "Provide it in /opt/hcp-etcd/bin (first on the image's PATH): with docker compose, put "
                "the binary at ./hcp-bin/hcp; on Kubernetes, the init container `hcp-cli` of "
                "include/deploy/values-common.yaml copies /usr/bin/hcp from the HyperShift operator's "
                "image (use the image the management cluster's operator runs). Or give "
                "rendered_manifests instead"
            )
        argv = [
            hcp,
            "create",
            "cluster",
            "aws",
            "--render",
            "--render-sensitive",
            f"--name={target.name}",
            f"--namespace={target.namespace}",
        ]
        for flag, value in sorted(dict(self.render_options or {}).items()):
            if not _HCP_OPTION.match(str(flag)) or flag in _HCP_RESERVED:
                raise RestoreInputError(f"render option {flag!r} is not allowed")
            if isinstance(value, bool):
                argv.append(f"--{flag}={'true' if value else 'false'}")
            elif isinstance(value, int | float | str):
                argv.append(f"--{flag}={value}")
            else:
                raise RestoreInputError(f"render option {flag!r} must be a string, number or boolean")
        self.log.info("rendering with %s", " ".join(argv[:8]))
        # A session of its own, so that on_kill ends the render and anything it started.
        with subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ),
            start_new_session=True,
        ) as proc:  # fmt: skip
            self._render_process = proc
            try:
                stdout, stderr = proc.communicate(timeout=300)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                raise
            finally:
                self._render_process = None
        if proc.returncode != 0:
            # stderr only: stdout holds the rendered secrets.
            raise RestoreInputError(
                f"`hcp create cluster aws --render` exited with {proc.returncode}: {stderr.strip()[-800:]}"
            )
        return stdout

    def _refuse_existing(self, plan: RestorePlan, restored_by: str) -> tuple[set[tuple[str, str]], set[str]]:
        """Refuse objects of the plan that exist already, but for two kinds of them.

        Adopted (returned as ``(kind, name)``): those an earlier try of this same run made; a try
        killed outright (SIGKILL, a lost worker) could not undo them, and created again they would be
        the same objects. An undo deletes them with the rest.

        Reused (returned by name, and taken out of the plan): Secrets and ConfigMaps left by the
        deleted HostedCluster that hold exactly what the restore would create (deleting a
        HostedCluster keeps the Secrets its spec names: ``<name>-pull-secret``, ``-ssh-key``,
        ``-etcd-encryption-key``). A key Secret is reused when it holds the backup's key. They are
        not the restore's: nothing here ever deletes them. Any other existing object is refused, with
        the command that removes it.
        """
        adopted: set[tuple[str, str]] = set()
        reused: set[str] = set()
        taken = []
        key_sha = {
            plan.key_secrets[r]: e["sha256"]
            for r, e in key_entries(self.manifest).items()
            if r in plan.key_secrets
        }
        sa_key = service_account_key(self.manifest)
        if plan.sa_key_secret is not None and sa_key is not None:
            key_sha[plan.sa_key_secret] = sa_key["sha256"]  # data.key is the escrowed object's bytes
        for o in list(plan.objects):
            if o["kind"] == "Namespace":
                continue
            meta = o["metadata"]
            found = self.k8s.object_annotations(
                o["apiVersion"], o["kind"], meta.get("namespace"), meta["name"]
            )
            if found is None:
                continue
            if found.get(RESTORED_BY_ANNOTATION) == restored_by:
                adopted.add((o["kind"], meta["name"]))
            elif o["kind"] == "HostedCluster":
                raise RestoreInputError(
                    f"HostedCluster {plan.target} already exists: a restore only happens at creation"
                )
            elif o["kind"] in ("Secret", "ConfigMap") and self._holds_the_same(o, key_sha.get(meta["name"])):
                plan.objects.remove(o)
                reused.add(meta["name"])
            else:
                what = f"{o['kind']} {meta['namespace']}/{meta['name']}"
                why = (
                    "holds another key than the backup's"
                    if meta["name"] in key_sha
                    else "holds other data than the restore's"
                    if o["kind"] in ("Secret", "ConfigMap")
                    else "exists"
                )
                taken.append(
                    f"{what} {why} (remove it: oc delete {o['kind'].lower()} -n {meta['namespace']} "
                    f"{meta['name']})"
                )
        if taken:
            raise RestoreInputError(
                f"these objects of the restore exist already: {'; '.join(taken)}. Left by a deleted "
                "HostedCluster of the same name? Check nothing else uses them, remove them and run again, "
                "or choose another target name"
            )
        if adopted:
            self.log.warning(
                "adopting %s: made by an earlier try of this run that ended without undoing them",
                ", ".join(f"{k} {n}" for k, n in sorted(adopted)),
            )
        if reused:
            self.log.info(
                "using %s as they are: left by the deleted HostedCluster, holding what the restore "
                "would create (never deleted by the restore)",
                ", ".join(sorted(reused)),
            )
        return adopted, reused

    def _holds_the_same(self, planned: dict[str, Any], key_sha256: str | None) -> bool:
        """Whether an existing Secret/ConfigMap holds what the plan would create (a key Secret: the
        backup's key, by fingerprint; the key itself is never compared here)."""
        ns, name = planned["metadata"]["namespace"], planned["metadata"]["name"]
        if planned["kind"] == "ConfigMap":
            return same_content("ConfigMap", planned, self.k8s.read_config_map_data(ns, name))
        data = self.k8s.read_secret_data(ns, name)
        for value in data.values():
            mask_secret(value)
        if key_sha256 is not None:
            key = data.get("key")
            return bool(key) and hashlib.sha256(base64.b64decode(key)).hexdigest() == key_sha256
        return same_content("Secret", planned, data)

    def _require_referenced(self, plan: RestorePlan) -> None:
        """Refuse a HostedCluster that names a Secret or ConfigMap that neither exists nor is created:
        HyperShift would wait for it forever (a pull secret, above all, for a cluster restored from its
        recorded spec)."""
        planned = {(o["kind"], o["metadata"]["name"]) for o in plan.objects}
        ns = plan.target.namespace
        missing = [
            f"{kind} {ns}/{name}"
            for kind, name in referenced_objects(plan.hosted_cluster)
            if (kind, name) not in planned and not self.k8s.object_exists("v1", kind, ns, name)
        ]
        if missing:
            raise RestoreInputError(
                f"the HostedCluster names {', '.join(missing)}, which do(es) not exist: create them first "
                f"(e.g. oc create secret generic <name>-pull-secret -n {ns} "
                "--from-file=.dockerconfigjson=pull-secret.json), or give rendered manifests that hold them"
            )

    def _copy_referenced(self, plan: RestorePlan) -> None:
        """Fill the drill's copies of the Secrets and ConfigMaps its spec references from the source's."""
        source = ClusterRef.parse(self.backup["source"])
        by_name = {(o["kind"], o["metadata"]["name"]): o for o in plan.objects}
        for (kind, target_name), source_name in plan.copies.items():
            if kind == "Secret":
                data = self.k8s.read_secret_data(source.namespace, source_name)
                for value in data.values():
                    mask_secret(value)
            else:
                data = self.k8s.read_config_map_data(source.namespace, source_name)
            by_name[(kind, target_name)]["data"] = data


class WaitRestoredOperator(RestoreStepOperator):
    """Wait (deferrable) until the new cluster is Available with ``EtcdSnapshotRestored=True``.

    Fails at once with etcd-init's message when ``EtcdSnapshotRestored`` turns False.

    :param created: the result of the create task. (templated)
    :param timeout: seconds.
    :param poll_interval: seconds between polls.
    :return: ``{"available_at", "recovery_seconds"}`` (create -> Available).
    """

    template_fields: tuple[str, ...] = (*RestoreStepOperator.template_fields, "created", "timeout")
    # A restore of a few GiB is Available within a minute or two: poll in the worker first (every
    # second), so that the end is seen at once and not up to a poll interval plus a triggerer ->
    # scheduler -> worker hand-off later (BENCHMARKS.md, figure 5); defer after 2 minutes.
    inline_wait_seconds = 120
    inline_poll_interval = 1.0

    def __init__(
        self, *, created: Any = None, timeout: float | str = 1800, poll_interval: float = 5, **kwargs: Any
    ) -> None:
        """See the class docstring."""
        super().__init__(**kwargs)
        self.created = created
        self.timeout = timeout
        self.poll_interval = poll_interval

    def run(self, context: Context) -> Any:
        """Defer to the trigger."""
        from hcp_etcd.triggers.restore import RestoredClusterTrigger

        target = self.target
        self.timeout = float(self.timeout)
        trigger = RestoredClusterTrigger(
            namespace=target.namespace,
            name=target.name,
            kubernetes_conn_id=self.kubernetes_conn_id,
            timeout=self.timeout,
            poll_interval=self.poll_interval,
        )
        return self.wait(trigger, "execute_complete", context)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Interpret the event.

        :param context: task context.
        :param event: the trigger's payload.
        """
        try:
            target = self.target
            if event.get("status") == "failed":
                raise RuntimeError(f"restore of {target} failed in etcd-init: {event.get('message')}")
            if event.get("status") != "success":
                raise RuntimeError(
                    f"{target} not Available with EtcdSnapshotRestored within {float(self.timeout):.0f}s: "
                    f"{event.get('message')}"
                )
            available = parse_rfc3339(event["available_at"])
            recovery = available.timestamp() - float(self.created["created_ts"])
            self.log.info("%s restored and Available %.1fs after creation", target, recovery)
            return {"available_at": event["available_at"], "recovery_seconds": round(recovery, 3)}
        except Exception as err:
            self.record_error(context, err)
            raise


class VerifyRestoreOperator(RestoreStepOperator, KubernetesExecOperator):
    """Prove the restored etcd holds the backed-up data, reading it as it is now (in its pods).

    Never at the backup's revision: HyperShift's etcd-init restores with ``--bump-revision
    --mark-compacted`` and the restored kube-apiserver compacts every 5 minutes, so that revision is
    gone. The backup's keys are told from later writes by their revisions instead. Checks: every
    member in one cluster of the expected size (``member list`` on each: the split-brain guard),
    revision >= the manifest's, the backup's keys per resource are all there (but those an etcd lease
    or the control plane may have dropped since), the manifest's sampled keys hold the backup's
    values unless rewritten since, the key in the new cluster's Secret is the escrowed one,
    Secrets of the backup decrypt with it, and the control plane's service-account signing key
    (``sa-signing-key`` in its namespace) is the escrowed one (or, for ``service_account_key="new"``,
    not it). Older manifests without samples or a service-account key get the checks they allow.

    A ``type: kms`` backup has no key Secret: the checks are that the new cluster's KMS key ARNs are
    the backup's (``kms_key_matches_manifest``) and that Secrets of the backup decrypt through AWS
    KMS with the AWS connection (``kms:Decrypt`` on those keys; ``secret_decrypts``).

    :param fail_on_check_failure: raise when a check fails (the restore DAG); the drill reports instead.
    :param secret_samples: Secrets to try the key on when the manifest samples none.
    :param service_account_key: what the create task gave the cluster: ``escrowed`` or ``new``. (templated)
    :return: ``{"checks": [...], "passed": bool}``.
    """

    template_fields: tuple[str, ...] = tuple(
        dict.fromkeys(
            (
                *RestoreStepOperator.template_fields,
                *KubernetesExecOperator.template_fields,
                "service_account_key",
            )
        )
    )

    kms_hook_class: str = "hcp_etcd.hooks.kms.KeyManagementHook"

    def __init__(
        self,
        *,
        fail_on_check_failure: bool = True,
        secret_samples: int = 3,
        service_account_key: str = "escrowed",
        **kwargs: Any,
    ) -> None:
        """See the class docstring."""
        super().__init__(**kwargs)
        self.fail_on_check_failure = fail_on_check_failure
        self.secret_samples = secret_samples
        self.service_account_key = service_account_key

    def run(self, context: Context) -> dict[str, Any]:
        """Run every check, then judge."""
        target, manifest = self.target, self.manifest
        ns = target.control_plane_namespace
        revision = int(manifest["etcd"]["revision"])
        hc = self.k8s.get_hosted_cluster(target)
        pods = self.k8s.list_etcd_pods(ns)
        if not pods:
            raise RuntimeError(f"no etcd pods in {ns}")
        per_pod: dict[str, list[str]] = {}
        revisions: dict[str, int] = {}
        for pod in pods:
            per_pod[pod] = etcd.parse_member_list(
                self.exec_in_pod(ns, pod, etcd.member_list_command(), timeout=60).stdout
            )
            revisions[pod] = etcd.parse_endpoint_status(
                self.exec_in_pod(ns, pod, etcd.endpoint_status_command(), timeout=60).stdout
            ).revision
        checks = [
            check_members(per_pod, replicas_of(hc)),
            check_revision(revisions, revision),
            self._key_counts(ns, pods[0], revision),
        ]
        samples = manifest["etcd"].get("samples") or []
        found = self._read(ns, pods[0], [x["key"] for x in samples])
        if samples:
            checks.append(check_samples(samples, found, revision))
        checks += self._secrets(ns, pods[0], revision, hc, found)
        sa_check = self._service_account_key(ns)
        if sa_check is not None:
            checks.append(sa_check)
        for c in checks:
            self.log.info("check %-20s %s  %s", c.name, "PASS" if c.passed else "FAIL", c.detail)
        result = {"checks": [c.as_dict() for c in checks], "passed": not failed(checks)}
        if self.fail_on_check_failure and not result["passed"]:
            raise RuntimeError(
                f"restored {target} failed verification: {', '.join(failed(checks))} "
                "(see the log for each check)"
            )
        return result

    def _service_account_key(self, ns: str) -> Check | None:
        """The restored control plane's signing key against the backup's (None: the backup has none)."""
        from kubernetes.client.rest import ApiException

        sa_key = service_account_key(self.manifest)
        escrowed = _sa_key_choice(self.service_account_key) == "escrowed"
        if sa_key is None:
            self.log.warning("the backup escrowed no service-account signing key: not compared")
            return None
        name = sakey.CONTROL_PLANE_SECRET
        try:
            data = self.k8s.read_secret_data(ns, name)
        except ApiException as err:
            return Check("sa_key_matches_manifest" if escrowed else "sa_key_is_new", False,
                         f"Secret {ns}/{name} is unreadable: {err.status} {err.reason}")  # fmt: skip
        for value in data.values():
            mask_secret(value)
        private: str | None = None
        publics: list[str] = []
        with contextlib.suppress(sakey.ServiceAccountKeyError, ValueError):
            private = sakey.private_key_fingerprint(base64.b64decode(data.get(sakey.PRIVATE_KEY) or ""))
        with contextlib.suppress(sakey.ServiceAccountKeyError, ValueError):
            publics = sakey.public_key_fingerprints(base64.b64decode(data.get(sakey.PUBLIC_KEY) or ""))
        del data
        return check_service_account_key(sa_key["public_key_sha256"], private, publics, escrowed)

    def _key_counts(self, ns: str, pod: str, revision: int) -> Check:
        from hcp_etcd.hooks.hosted_cluster import ExecError

        inventory = etcd.KeyInventory(revision=revision)
        try:
            self.exec_in_pod(
                ns,
                pod,
                etcd.keys_listing_command(),
                timeout=600,
                on_stdout_line=lambda line: inventory.feed([line]),
            )
        except ExecError as err:
            return Check("key_counts", False, f"cannot list the keys: {str(err)[-300:]}")
        self.log.info(
            "restored etcd at revision %s: %s keys of the backup, %s written since",
            inventory.listed_revision,
            inventory.counts,
            inventory.newer,
        )
        etcd_facts = self.manifest["etcd"]
        return compare_key_counts(
            inventory.counts, etcd_facts["key_counts"], etcd_facts.get("leased_key_counts")
        )

    def _read(self, ns: str, pod: str, keys: list[str]) -> dict[str, etcd.StoredValue]:
        if not keys:
            return {}
        out = self.exec_in_pod(ns, pod, etcd.get_keys_command(keys), timeout=300)
        return etcd.parse_get_json_lines(out.stdout)

    def _secrets(
        self, ns: str, pod: str, revision: int, hc: dict[str, Any], found: dict[str, etcd.StoredValue]
    ) -> list[Check]:
        # Secrets of the backup (not rewritten since): they were encrypted by the source cluster.
        of_backup = [
            (v.key, v.value)
            for v in found.values()
            if etcd.resource_of_key(v.key) == "secrets" and v.mod_revision <= revision
        ]
        if not of_backup:
            out = self.exec_in_pod(ns, pod, etcd.secret_sample_command(self.secret_samples), timeout=120)
            of_backup = etcd.parse_get_values(out.stdout)[: max(self.secret_samples, 1)]
        arns = kms_key_arns(self.manifest)
        if arns is not None:
            return self._kms_secrets(hc, arns, of_backup)
        keys: dict[str, bytes] = {}
        for role, name in key_secret_names(hc).items():
            encoded = self.k8s.read_secret_data(self.target.namespace, name).get("key")
            if encoded:
                mask_secret(encoded)
                keys[role] = base64.b64decode(encoded)
        seen = {role: hashlib.sha256(k).hexdigest() for role, k in keys.items()}
        expected = {role: e["sha256"] for role, e in key_entries(self.manifest).items()}
        matches = Check(
            "key_matches_manifest",
            all(seen.get(role) == sha for role, sha in expected.items()),
            "; ".join(
                f"the new cluster's {role} has sha256 {seen.get(role)}, the backup's {sha}"
                for role, sha in expected.items()
            ),
        )
        samples = of_backup
        # Each Secret with the key its stored value names (a backup taken mid-rotation has two).
        by_name = {aescbc.kas_key_name(k): k for k in keys.values()}
        # Older manifests do not record key names: the restored keys' (checked against them above).
        escrowed = {e["kas_key_name"]: ", ".join(e["roles"]) for e in escrowed_keys(self.manifest)}
        escrowed.pop(None, None)
        for role, k in keys.items():
            escrowed.setdefault(aescbc.kas_key_name(k), role)
        decrypts = check_secret_decrypts(samples, by_name, escrowed)
        del keys, by_name
        return [matches, decrypts]

    def _kms_secrets(
        self, hc: dict[str, Any], arns: list[str], samples: list[tuple[str, bytes]]
    ) -> list[Check]:
        """A ``type: kms`` backup: the new cluster uses its KMS keys, and its Secrets decrypt through
        AWS KMS (``kms:Decrypt`` for the AWS connection), each under a key the backup recorded."""
        hook = import_string(self.kms_hook_class)(aws_conn_id=self.aws_conn_id)
        region = (
            (((hc.get("spec") or {}).get("secretEncryption") or {}).get("kms") or {}).get("aws") or {}
        ).get("region")
        decrypts = check_secret_decrypts_kms(
            samples, arns, lambda blob: hook.decrypt(blob, region_name=region)
        )
        return [check_kms_keys(target_kms_arns(hc), arns), decrypts]
