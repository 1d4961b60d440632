"""The target of a restore and its manifests, edited into the objects to create (a :class:`RestorePlan`)."""

from __future__ import annotations

import base64
import copy
import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import yaml

from hcp_etcd import sakey
from hcp_etcd.encryption import kms_target_mismatch, target_kms_arns
from hcp_etcd.errors import RestoreInputError, describe
from hcp_etcd.manifest import kms_key_arns, service_account_key
from hcp_etcd.naming import (
    ANNOTATION_PREFIX,
    ClusterRef,
    InvalidNameError,
    control_plane_namespace,
    validate_name,
    validate_namespace,
)
from hcp_etcd.restore.backups import key_entries

RESTORED_FROM_ANNOTATION = f"{ANNOTATION_PREFIX}/restored-from"
RESTORED_BY_ANNOTATION = f"{ANNOTATION_PREFIX}/restored-by"
DRILL_LABEL = f"{ANNOTATION_PREFIX}/drill"
DEFAULT_REPLICAS = {"HighlyAvailable": 3, "SingleReplica": 1}
HYPERSHIFT_API = "hypershift.openshift.io/v1beta1"
# What a restore may create: the kinds ``hcp create cluster aws --render`` prints. Anything else is
# refused before creation (the Airflow identity needs no RBAC beyond these).
SUPPORTED_KINDS: dict[tuple[str, str], int] = {
    ("v1", "Namespace"): 0,
    ("v1", "Secret"): 1,
    ("v1", "ConfigMap"): 1,
    (HYPERSHIFT_API, "HostedCluster"): 2,
    (HYPERSHIFT_API, "NodePool"): 3,
}
_KEY_ROLES = ("activeKey", "backupKey")
_STRIP_METADATA = (
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "generation",
    "managedFields",
    "selfLink",
    "ownerReferences",
    "finalizers",
    "deletionTimestamp",
)


def check_target(namespace: str, name: str) -> ClusterRef:
    """Validate a restore target, including its control-plane namespace (a DNS-1123 label).

    :param namespace: the new HostedCluster's namespace.
    :param name: the new HostedCluster's name.
    """
    try:
        ref = ClusterRef(validate_namespace(namespace), validate_name(name))
        validate_namespace(control_plane_namespace(namespace, name))
    except InvalidNameError as err:
        raise RestoreInputError(f"invalid restore target {namespace}/{name}: {err}") from None
    return ref


def drill_target_name(name: str, moment: datetime) -> str:
    """``<name>-drill-<YYYYMMDD>``: the scratch cluster of a drill.

    :param name: the drilled cluster's name.
    :param moment: the drill's date (aware).
    """
    return f"{name}-drill-{moment.astimezone(UTC).strftime('%Y%m%d')}"


def load_objects(text: str, origin: str) -> list[dict[str, Any]]:
    """Parse multi-document YAML (or a JSON list / ``kind: List``) into objects.

    :param text: the rendered manifests.
    :param origin: where they came from, for messages.
    """
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as err:
        # Position only: yaml's own text quotes the line, and rendered manifests hold Secrets.
        raise RestoreInputError(f"{origin} is not valid YAML: {describe(err, 300)}") from None
    objects: list[dict[str, Any]] = []
    for doc in docs:
        if isinstance(doc, list):
            objects += doc
        elif isinstance(doc, dict) and doc.get("kind") == "List":
            objects += doc.get("items") or []
        else:
            objects.append(doc)
    for obj in objects:
        if not isinstance(obj, dict) or not {"apiVersion", "kind", "metadata"} <= obj.keys():
            raise RestoreInputError(f"{origin}: every document needs apiVersion, kind and metadata")
        if (obj["apiVersion"], obj["kind"]) not in SUPPORTED_KINDS:
            raise RestoreInputError(
                f"{origin}: {obj['apiVersion']} {obj['kind']} is not something a restore creates "
                f"(supported: {', '.join(k for _, k in SUPPORTED_KINDS)})"
            )
        if not isinstance(obj["metadata"], dict) or not obj["metadata"].get("name"):
            raise RestoreInputError(f"{origin}: a {obj['kind']} has no metadata.name")
    return objects


def _clean_metadata(obj: dict[str, Any]) -> None:
    meta = obj["metadata"]
    for k in _STRIP_METADATA:
        meta.pop(k, None)
    obj.pop("status", None)


def key_secret_names(hc: dict[str, Any]) -> dict[str, str]:
    """``spec.secretEncryption.aescbc`` key Secrets by role; refuses a non-aescbc HostedCluster.

    :param hc: a HostedCluster.
    """
    enc = (hc.get("spec") or {}).get("secretEncryption") or {}
    spec = enc.get("aescbc") or {}
    names = {r: (spec.get(r) or {}).get("name") for r in _KEY_ROLES}
    if enc.get("type", "aescbc") != "aescbc" or not names["activeKey"]:
        raise RestoreInputError(
            "the HostedCluster has no spec.secretEncryption.aescbc.activeKey: a restore needs the AES-CBC "
            "key "
            "secret to hold the escrowed key (render with --render-sensitive)"
        )
    return {r: n for r, n in names.items() if n}


@dataclass
class RestorePlan:
    """The objects to create, in order, and which Secrets take which escrowed key.

    :param objects: the objects (Namespace first).
    :param target: the new HostedCluster.
    :param key_secrets: aescbc role -> Secret name (in the target namespace).
    :param replicas: etcd members the new cluster will have.
    :param copies: ``(kind, target name)`` -> source name of the Secrets and ConfigMaps whose data the
        create task copies from the source's namespace (clone only).
    :param sa_key_secret: the ``spec.serviceAccountSigningKey`` Secret that takes the escrowed
        service-account signing key (None: the cluster gets a new one from HyperShift).
    """

    objects: list[dict[str, Any]]
    target: ClusterRef
    key_secrets: dict[str, str]
    replicas: int
    copies: dict[tuple[str, str], str] = field(default_factory=dict)
    sa_key_secret: str | None = None

    @property
    def hosted_cluster(self) -> dict[str, Any]:
        """The HostedCluster object of the plan."""
        return next(o for o in self.objects if o["kind"] == "HostedCluster")

    def summary(self) -> list[str]:
        """``Kind ns/name`` of every object (for logs and XCom: no data)."""
        return [
            f"{o['kind']} {o['metadata'].get('namespace', '')}/{o['metadata']['name']}".replace(" /", " ")
            for o in self.objects
        ]

    def fill_key(self, role: str, key: bytes) -> None:
        """Put an escrowed key into its Secret (``data.key``). Only ever done inside the create task.

        :param role: ``activeKey`` or ``backupKey``.
        :param key: the 32 key bytes.
        """
        name = self.key_secrets[role]
        secret = next(o for o in self.objects if o["kind"] == "Secret" and o["metadata"]["name"] == name)
        secret["data"] = {**(secret.get("data") or {}), "key": base64.b64encode(key).decode()}
        secret.pop("stringData", None)

    def fill_service_account_key(self, pem: bytes) -> None:
        """Put the escrowed service-account signing key into its Secret (``data.key``, as
        ``spec.serviceAccountSigningKey`` wants it). Only ever done inside the create task.

        :param pem: the PEM private key.
        """
        secret = next(
            o for o in self.objects if o["kind"] == "Secret" and o["metadata"]["name"] == self.sa_key_secret
        )
        secret["data"] = {**(secret.get("data") or {}), sakey.SPEC_SECRET_KEY: base64.b64encode(pem).decode()}
        secret.pop("stringData", None)


def replicas_of(hc: dict[str, Any]) -> int:
    """etcd members of a HostedCluster, from ``controllerAvailabilityPolicy`` (HyperShift's default: HA).

    :param hc: a HostedCluster.
    """
    policy = (hc.get("spec") or {}).get("controllerAvailabilityPolicy") or "HighlyAvailable"
    if policy not in DEFAULT_REPLICAS:
        raise RestoreInputError(f"unknown controllerAvailabilityPolicy {policy!r}")
    return DEFAULT_REPLICAS[policy]


def _set_restore_storage(hc: dict[str, Any], url: str) -> None:
    """Managed etcd on a PersistentVolume, restored from ``url`` (the only place a restore can happen)."""
    etcd = hc["spec"].setdefault("etcd", {})
    etcd["managementType"] = "Managed"
    etcd.pop("unmanaged", None)
    managed = etcd.setdefault("managed", {})
    storage = managed.setdefault("storage", {})
    storage["type"] = "PersistentVolume"
    storage.setdefault("persistentVolume", {"size": "8Gi"})
    storage["restoreSnapshotURL"] = [url]


def rendered_for(hc: dict[str, Any]) -> ClusterRef:
    """The cluster a rendered HostedCluster was rendered for (``hcp``'s default namespace: ``clusters``).

    :param hc: the rendered HostedCluster.
    """
    return ClusterRef(hc["metadata"].get("namespace") or "clusters", hc["metadata"]["name"])


def prepare_objects(
    objects: list[dict[str, Any]],
    target: ClusterRef,
    url: str,
    manifest: dict[str, Any],
    manifest_uri: str,
    restored_by: str,
    escrowed_service_account_key: bool = True,
) -> RestorePlan:
    """Edit rendered manifests into a restore of ``manifest`` as ``target``: applied as rendered.

    The manifests must be rendered for the target: ``hcp create cluster aws --render`` binds the
    cluster's AWS identity to what it renders (``infraID``; ``issuerURL`` ends in the infraID; the IAM
    roles of ``platform.aws.rolesRef`` and the NodePools' ``instanceProfile`` are named after it,
    ``cmd/infra/aws/create_iam.go``; service hostnames and NodePools carry the name), so nothing of it
    is renamed or regenerated here. What changes: etcd becomes Managed/PersistentVolume with
    ``restoreSnapshotURL``; ``pausedUntil`` goes (a paused cluster never restores); the aescbc key
    Secrets lose the rendered NEW key (the create task puts the escrowed one in); a backup key
    escrowed by the backup gets a Secret and ``backupKey`` too; a ``type: kms`` backup needs a
    HostedCluster with the same KMS key ARN(s) (refused otherwise, naming both) and gets no key
    Secret; the service-account signing key the
    backup escrowed goes into the ``spec.serviceAccountSigningKey`` Secret (the spec's, else
    ``<name>-sa-token-issuer-key``), so tokens the lost cluster issued still validate; server-set
    metadata and ``status`` go, and the run is recorded in annotations.

    :param objects: the rendered objects (not modified).
    :param target: the new HostedCluster; it must be the rendered one.
    :param url: the presigned GET URL of the snapshot (``""`` to validate only).
    :param manifest: the backup manifest.
    :param manifest_uri: where the manifest is (recorded as an annotation).
    :param restored_by: the Airflow run (recorded as an annotation).
    :param escrowed_service_account_key: give the cluster the escrowed service-account signing key
        (when the backup has one); False keeps the spec's and lets HyperShift generate a new key
        without one (a drill: it must not sign tokens its source's clients accept).
    """
    objs = copy.deepcopy(objects)
    hcs = [o for o in objs if o["kind"] == "HostedCluster"]
    if len(hcs) != 1:
        raise RestoreInputError(
            f"the rendered manifests hold {len(hcs)} HostedClusters; exactly one is needed"
        )
    hc = hcs[0]
    rendered = rendered_for(hc)
    if rendered != target:
        raise RestoreInputError(
            f"the manifests were rendered for {rendered} but the restore's target is {target}: a rendered "
            "file is applied as rendered (its infraID, issuerURL, IAM roles, instance profile and "
            f"hostnames belong to {rendered}). Set target_namespace={rendered.namespace} and "
            f"target_name={rendered.name}, or render for the target: hcp create cluster aws --render "
            f"--render-sensitive --namespace {target.namespace} --name {target.name} ..."
        )
    if not isinstance(hc.get("spec"), dict):
        raise RestoreInputError("the rendered HostedCluster has no spec")
    for obj in objs:
        _clean_metadata(obj)
        meta = obj["metadata"]
        if obj["kind"] == "Namespace":
            continue
        if meta.setdefault("namespace", target.namespace) != target.namespace:
            raise RestoreInputError(
                f"{obj['kind']} {meta['namespace']}/{meta['name']} is outside the HostedCluster's "
                f"namespace {target.namespace}: a restore creates objects in the target namespace only"
            )
        # Which run made it: a retry of that run adopts what a killed try left (it could not undo it).
        meta.setdefault("annotations", {})[RESTORED_BY_ANNOTATION] = restored_by
        cluster_name = (obj.get("spec") or {}).get("clusterName")
        if obj["kind"] == "NodePool" and cluster_name != target.name:
            raise RestoreInputError(
                f"NodePool {meta['name']} belongs to cluster {cluster_name!r}, not to {target.name}"
            )
    hc["spec"].pop("pausedUntil", None)
    _set_restore_storage(hc, url or "https://placeholder.invalid/")
    hc["metadata"]["annotations"][RESTORED_FROM_ANNOTATION] = manifest_uri  # restored-by: set above
    arns = kms_key_arns(manifest)
    if arns is not None:
        _use_kms_keys(hc, arns)
        names: dict[str, str] = {}
    else:
        names = key_secret_names(hc)
    if "backupKey" in key_entries(manifest) and "backupKey" not in names:
        names["backupKey"] = f"{target.name}-etcd-encryption-backup-key"
        hc["spec"]["secretEncryption"]["aescbc"]["backupKey"] = {"name": names["backupKey"]}
    secrets_by_name = {o["metadata"]["name"]: o for o in objs if o["kind"] == "Secret"}
    for role, name in names.items():
        secret = secrets_by_name.get(name)
        if secret is None:
            # Annotated like every object above: a retry of this run adopts it, an undo deletes it.
            secret = {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "Opaque",
                "metadata": {
                    "name": name,
                    "namespace": target.namespace,
                    "annotations": {RESTORED_BY_ANNOTATION: restored_by},
                },
            }
            objs.append(secret)
        if role not in key_entries(manifest):
            raise RestoreInputError(
                f"the HostedCluster names a {role} Secret {name!r} but the backup escrowed no such key"
            )
        # Never create the cluster with the freshly rendered key: it could not read the restored Secrets.
        secret["data"] = {k: v for k, v in (secret.get("data") or {}).items() if k != "key"}
        secret.pop("stringData", None)
    sa_key_secret = None
    if escrowed_service_account_key and service_account_key(manifest) is not None:
        sa_key_secret = _service_account_key_secret(hc, objs, target, restored_by)
    objs.sort(key=lambda o: SUPPORTED_KINDS[(o["apiVersion"], o["kind"])])
    return RestorePlan(objs, target, names, replicas_of(hc), sa_key_secret=sa_key_secret)


def _use_kms_keys(hc: dict[str, Any], arns: list[str]) -> None:
    """A ``type: kms`` backup: refuse a HostedCluster that would not use the backup's KMS key(s); give
    it the backup's second key as ``backupKey`` when it has none (a backup taken mid-rotation).

    There is no key Secret to fill: AWS KMS keeps the key, and the new cluster's kube-apiserver
    unwraps the DEKs stored in etcd with it (``kas/kms/aws.go``).
    """
    problem = kms_target_mismatch(hc, arns)
    if problem:
        raise RestoreInputError(problem)
    if len(arns) > 1 and target_kms_arns(hc)[1] is None:
        hc["spec"]["secretEncryption"]["kms"]["aws"]["backupKey"] = {"arn": arns[1]}


def _service_account_key_secret(
    hc: dict[str, Any], objs: list[dict[str, Any]], target: ClusterRef, restored_by: str
) -> str:
    """Point ``spec.serviceAccountSigningKey`` at a Secret for the escrowed key (planned, emptied of
    any other ``key``: a rendered one holds another key); its ``old-key.pub`` stays."""
    ref = hc["spec"].get("serviceAccountSigningKey") or {}
    name = ref.get("name") or sakey.restore_secret_name(target.name)
    hc["spec"]["serviceAccountSigningKey"] = {"name": name}
    secret = next((o for o in objs if o["kind"] == "Secret" and o["metadata"]["name"] == name), None)
    if secret is None:
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": name,
                "namespace": target.namespace,
                "annotations": {RESTORED_BY_ANNOTATION: restored_by},
            },
        }
        objs.append(secret)
    secret["data"] = {k: v for k, v in (secret.get("data") or {}).items() if k != sakey.SPEC_SECRET_KEY}
    secret.pop("stringData", None)
    return name


def check_identity_not_shared(rendered_hc: dict[str, Any], source_hc: dict[str, Any] | None) -> None:
    """Refuse a rendered HostedCluster with the infraID of the live source cluster.

    HyperShift tags and deletes a cluster's cloud resources, and stores its OIDC documents (key
    ``<infraID>/...`` in the OIDC bucket, ``hostedcluster_controller.go: reconcileAWSOIDCDocuments``),
    by infraID: two clusters sharing one would break each other, and deleting either would delete
    the other's infrastructure. Typically the source's own render file was given for a new cluster.

    :param rendered_hc: the rendered HostedCluster.
    :param source_hc: the source HostedCluster as it is now (None: it no longer exists).
    """
    infra_id = (rendered_hc.get("spec") or {}).get("infraID")
    if source_hc is None or not infra_id or (source_hc.get("spec") or {}).get("infraID") != infra_id:
        return
    src = source_hc["metadata"]
    raise RestoreInputError(
        f"the rendered HostedCluster has infraID {infra_id!r}, the infraID of the live source "
        f"{src.get('namespace')}/{src['name']}: two clusters cannot share cloud resources and OIDC "
        "documents. Render the new cluster with its own infrastructure (hcp create infra aws / hcp "
        "create iam aws for a new infra id, then --infra-json / --iam-json)"
    )


def availability_mismatch(rendered_hc: dict[str, Any], manifest: dict[str, Any]) -> str | None:
    """Why the new cluster's etcd size differs from the backed-up cluster's, or None.

    The manifest records the source's etcd members (``etcd.members``), not its spec: their count
    stands for its ``controllerAvailabilityPolicy`` (HighlyAvailable 3, SingleReplica 1). ``hcp create
    cluster`` renders SingleReplica unless told otherwise (``cmd/cluster/core/create.go``), so a
    restore of an HA cluster from a default render silently loses its HA.

    :param rendered_hc: the HostedCluster to create.
    :param manifest: the backup manifest.
    """
    backed_up = len(manifest["etcd"]["members"])
    new = replicas_of(rendered_hc)
    if new == backed_up:
        return None
    policy = (rendered_hc.get("spec") or {}).get("controllerAvailabilityPolicy") or "HighlyAvailable"
    was = {v: k for k, v in DEFAULT_REPLICAS.items()}.get(backed_up, f"{backed_up} members")
    return (
        f"the backup was taken from a {backed_up}-member etcd ({was}); the manifests say "
        f"controllerAvailabilityPolicy {policy}, so the restored cluster will have {new} member(s). "
        f"To keep {was}, render with --control-plane-availability-policy {was}"
    )


def release_mismatch(rendered_hc: dict[str, Any], manifest: dict[str, Any]) -> str | None:
    """Why the new cluster runs another OpenShift release than the backed-up one, or None.

    A backup records its cluster's release (``source.release_image``, since the backups carry the
    cluster's spec). Restoring etcd data under another release is an upgrade or a downgrade at the
    moment of the restore: kube-apiserver and the operators meet objects of the other release.

    :param rendered_hc: the HostedCluster to create.
    :param manifest: the backup manifest.
    """
    was = (manifest.get("source") or {}).get("release_image")
    new = ((rendered_hc.get("spec") or {}).get("release") or {}).get("image")
    if not was or not new or was == new:
        return None
    return (
        f"the backup was taken at release {was}; the manifests create {new}. Restore at the backup's "
        f"release (render with --release-image {was}) and upgrade afterwards"
    )


# ``spec.configuration``'s references to Secrets and ConfigMaps next to the HostedCluster, as
# HyperShift collects them to copy into the control plane (``api/util/configrefs/refs.go``).
_IDP_TYPES = (
    "basicAuth",
    "github",
    "gitlab",
    "google",
    "htpasswd",
    "keystone",
    "ldap",
    "openID",
    "requestHeader",
)
_IDP_SECRET_FIELDS = ("clientSecret", "tlsClientCert", "tlsClientKey", "fileData", "bindPassword")


def _config_refs(configuration: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """``(kind, {"name": ...})`` of every Secret/ConfigMap that ``spec.configuration`` names.

    :param configuration: ``spec.configuration`` of a HostedCluster.
    """
    refs: list[tuple[str, Any]] = []
    api = configuration.get("apiServer") or {}
    refs.append(("ConfigMap", api.get("clientCA")))
    auth = configuration.get("authentication") or {}
    refs.append(("ConfigMap", auth.get("oauthMetadata")))
    for webhook in [*(auth.get("webhookTokenAuthenticators") or []), auth.get("webhookTokenAuthenticator")]:
        refs.append(("Secret", (webhook or {}).get("kubeConfig")))
    if auth.get("type") == "OIDC":
        for provider in auth.get("oidcProviders") or []:
            refs.append(("ConfigMap", (provider.get("issuer") or {}).get("issuerCertificateAuthority")))
            refs += [("Secret", c.get("clientSecret")) for c in provider.get("oidcClients") or []]
    refs.append(("ConfigMap", (configuration.get("image") or {}).get("additionalTrustedCA")))
    oauth = configuration.get("oauth") or {}
    for idp in oauth.get("identityProviders") or []:
        for kind in _IDP_TYPES:
            provider = idp.get(kind) or {}
            refs.append(("ConfigMap", provider.get("ca")))
            refs += [("Secret", provider.get(f)) for f in _IDP_SECRET_FIELDS]
    refs += [("Secret", t) for t in (oauth.get("templates") or {}).values()]
    refs.append(("ConfigMap", (configuration.get("proxy") or {}).get("trustedCA")))
    refs.append(("ConfigMap", (configuration.get("scheduler") or {}).get("policy")))
    return [(kind, ref) for kind, ref in refs if isinstance(ref, dict) and ref.get("name")]


def _spec_refs(spec: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """``(kind, {"name": ...})`` of every Secret/ConfigMap next to it that a HostedCluster spec names,
    the aescbc key Secrets aside (a restore fills those itself).

    :param spec: a HostedCluster's spec.
    """
    refs = [
        ("Secret", spec.get("pullSecret")),
        ("Secret", spec.get("sshKey")),
        ("ConfigMap", spec.get("additionalTrustBundle")),
        ("Secret", spec.get("serviceAccountSigningKey")),
        *_config_refs(spec.get("configuration") or {}),
    ]
    return [(kind, ref) for kind, ref in refs if isinstance(ref, dict) and ref.get("name")]


def referenced_objects(hc: dict[str, Any]) -> list[tuple[str, str]]:
    """``(kind, name)`` of the Secrets and ConfigMaps the HostedCluster needs in its namespace.

    :param hc: the HostedCluster to create.
    """
    return sorted({(kind, ref["name"]) for kind, ref in _spec_refs(hc.get("spec") or {})})


def same_content(kind: str, planned: dict[str, Any], existing: dict[str, str]) -> bool:
    """Whether an existing Secret or ConfigMap holds what the restore would create.

    :param kind: ``Secret`` (``existing`` base64, as the API returns it) or ``ConfigMap``.
    :param planned: the object of the plan.
    :param existing: the existing object's ``data``.
    """
    data = dict(planned.get("data") or {})
    for k, v in (planned.get("stringData") or {}).items():
        data[k] = base64.b64encode(str(v).encode()).decode() if kind == "Secret" else str(v)
    return data == dict(existing)


def recorded_objects(manifest: dict[str, Any], target: ClusterRef) -> list[dict[str, Any]]:
    """The lost cluster as its backup recorded it: its HostedCluster and NodePools, to be created as
    they were (``prepare_objects`` applies them as a rendered file).

    The way back for a cluster that is gone and was never rendered to a file: the restore brings it
    back under its own namespace and name, with its own identity (infraID, issuer, roles), so its
    cloud resources are its own again. The Secrets and ConfigMaps its spec names are not in the
    record (their data is not the backup's to keep): deleting a HostedCluster leaves them in place.

    :param manifest: the backup manifest (``source``: :func:`hcp_etcd.manifest.source_record`).
    :param target: the restore's target.
    """
    source = manifest.get("source")
    if not isinstance(source, dict):
        raise RestoreInputError(
            "this backup records no cluster spec (it was taken by an older release): give "
            "rendered_manifests (`hcp create cluster aws --render --render-sensitive`) or render_options"
        )
    hc = copy.deepcopy(source["hosted_cluster"])
    recorded = rendered_for(hc)
    if recorded != target:
        raise RestoreInputError(
            f"the backup recorded the spec of {recorded}: a restore from it brings {recorded} back under "
            f"its own name (target_namespace {recorded.namespace}, target_name {recorded.name}); to "
            f"restore as {target}, give rendered_manifests instead"
        )
    if source.get("node_pools") is None:
        raise RestoreInputError(
            f"the backup recorded {recorded}'s HostedCluster but not its NodePools (the backup could not "
            "list them): give rendered_manifests, or restore from a newer backup"
        )
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": target.namespace}},
        hc,
        *copy.deepcopy(source["node_pools"]),
    ]


def _drill_copy_name(source_name: str, source: str, target: str) -> str:
    """The drill's copy of a source object: ``<source>-x`` -> ``<target>-x``, else ``<target>-<name>``."""
    rest = source_name[len(source) + 1 :] if source_name.startswith(source + "-") else source_name
    name = f"{target}-{rest}"
    if len(name) > 253:  # a Secret/ConfigMap name is a DNS subdomain
        name = f"{target}-{hashlib.sha256(source_name.encode()).hexdigest()[:12]}"
    return name


def _drill_hostname(hostname: str, source: str, target: str) -> str | None:
    """``api-<source>.<domain>`` (``hcp --external-dns-domain``'s form) -> ``api-<target>.<domain>``."""
    label, dot, domain = hostname.partition(".")
    if dot and (label == source or label.endswith("-" + source)):
        own = label[: len(label) - len(source)] + target
        if len(own) <= 63:
            return f"{own}.{domain}"
    return None


def _drill_services(spec: dict[str, Any], source: str, target: str, changes: list[str]) -> None:
    """The drill publishes its services under hostnames of its own, never the source's.

    A Route or LoadBalancer hostname is what external-dns points at the cluster (and a Route's host
    is unique on the management cluster); a NodePort's port is unique on the management cluster too.
    """
    for mapping in spec.get("services") or []:
        strategy = mapping.get("servicePublishingStrategy") or {}
        for kind in ("route", "loadBalancer"):
            hostname = (strategy.get(kind) or {}).get("hostname")
            if not hostname:
                continue
            own = _drill_hostname(hostname, source, target)
            if own:
                strategy[kind]["hostname"] = own
                changes.append(f"{mapping.get('service')} hostname {hostname} -> {own}")
            else:
                del strategy[kind]["hostname"]
                changes.append(
                    f"{mapping.get('service')} hostname {hostname} dropped (not <service>-{source}.<domain>)"
                )
        node_port = strategy.get("nodePort") or {}
        if node_port.pop("port", None) is not None:
            changes.append(f"{mapping.get('service')} nodePort port dropped (the source holds it)")


@dataclass
class DrillClone:
    """A drill's manifests cloned from its source, and what was changed so that it cannot collide.

    :param objects: Namespace, HostedCluster and the Secrets/ConfigMaps it references, named for the drill.
    :param copies: ``(kind, drill name)`` -> source name: data the create task copies (never in XCom).
    :param changes: what was changed or dropped from the source's spec, and why (for the task log).
    """

    objects: list[dict[str, Any]]
    copies: dict[tuple[str, str], str]
    changes: list[str]


def clone_objects(source_hc: dict[str, Any], target: ClusterRef) -> DrillClone:
    """Manifests for a drill, cloned from the live source HostedCluster (control plane only, no NodePool).

    A drill runs next to its source, so nothing of the source's identity is kept (issue 14):

    - ``infraID``: a new one (HyperShift tags cloud resources and keys the OIDC documents with it);
    - ``issuerURL``: dropped (the CRD default, ``https://kubernetes.default.svc``). The source's issuer
      is backed by an IAM OIDC provider its roles trust: the drill's service accounts must get no AWS
      credentials of the source's (``rolesRef`` stays, as the API requires it; no token of the drill
      is trusted by those roles). ``serviceAccountSigningKey`` is dropped too (HyperShift makes the
      drill its own), as are ``kubeAPIServerDNSName``, ``dns.baseDomainPrefix`` (both name the
      source's DNS) and ``auditWebhook`` (the drill's audit events would land in the source's sink);
    - service hostnames: ``<service>-<source>.<domain>`` becomes ``<service>-<drill>.<domain>``, any
      other is dropped; NodePort ports are dropped;
    - Secrets and ConfigMaps referenced by the spec (pull secret, SSH key, ``additionalTrustBundle``,
      every reference of ``configuration``: identity providers' client secrets and CAs, trust
      bundles, ...) are copied under drill names (``<drill>-<name>``) by the create task;
      ``apiServer.servingCerts.namedCertificates`` are dropped (certificates for the source's names);
    - ``clusterID`` and ``pausedUntil`` go; the aescbc key Secrets are the drill's own, filled with the
      escrowed key.

    :param source_hc: the source HostedCluster as read from the API.
    :param target: the drill cluster.
    """
    src = source_hc["metadata"]["name"]
    spec = copy.deepcopy(source_hc.get("spec") or {})
    changes: list[str] = []
    spec.pop("clusterID", None)  # a clone is another cluster: HyperShift assigns a new id
    if spec.get("infraID"):
        spec["infraID"] = f"{target.name[:20]}-{secrets.token_hex(3)[:5]}"
        changes.append(f"infraID {source_hc['spec']['infraID']} -> {spec['infraID']}")
    for name, why in (
        ("issuerURL", "the source's OIDC issuer: its IAM roles trust it"),
        ("serviceAccountSigningKey", "the source's token signing key; HyperShift makes the drill's own"),
        ("kubeAPIServerDNSName", "the source's API DNS name"),
        ("auditWebhook", "the source's audit sink"),
    ):
        if spec.pop(name, None) is not None:
            changes.append(f"{name} dropped ({why})")
    if (spec.get("dns") or {}).pop("baseDomainPrefix", None) is not None:
        changes.append("dns.baseDomainPrefix dropped (the source's DNS subdomain)")
    _drill_services(spec, src, target.name, changes)
    serving = ((spec.get("configuration") or {}).get("apiServer") or {}).get("servingCerts") or {}
    if serving.pop("namedCertificates", None):
        changes.append("configuration.apiServer.servingCerts.namedCertificates dropped (the source's names)")
    hc = {
        "apiVersion": HYPERSHIFT_API,
        "kind": "HostedCluster",
        "metadata": {"name": target.name, "namespace": target.namespace, "labels": {DRILL_LABEL: "true"}},
        "spec": spec,
    }
    objects: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": target.namespace}},
        hc,
    ]
    copies: dict[tuple[str, str], str] = {}
    for kind, ref in _spec_refs(spec):
        source_name = ref["name"]
        ref["name"] = _drill_copy_name(source_name, src, target.name)
        if (kind, ref["name"]) not in copies:
            copies[(kind, ref["name"])] = source_name
            obj = {
                "apiVersion": "v1",
                "kind": kind,
                "metadata": {"name": ref["name"], "namespace": target.namespace},
            }
            objects.append({**obj, "type": "Opaque"} if kind == "Secret" else obj)
    aescbc_spec = (spec.get("secretEncryption") or {}).get("aescbc") or {}
    for role, suffix in (("activeKey", "etcd-encryption-key"), ("backupKey", "etcd-encryption-backup-key")):
        if isinstance(aescbc_spec.get(role), dict):
            aescbc_spec[role] = {"name": f"{target.name}-{suffix}"}
    return DrillClone(objects, copies, changes)
