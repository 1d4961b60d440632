"""What the API server checks before a write: object names, and the HostedCluster CRD's schema.

:class:`~hcp_sandbox.store.Store` runs the defaulters and validators registered here
(``DEFAULTERS``, ``VALIDATORS``) before every create and update; a failed check raises
:func:`~hcp_sandbox.errors.invalid` (422) with one cause per field error.
"""

from __future__ import annotations

import copy
import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hcp_sandbox.errors import invalid
from hcp_sandbox.resources import ResourceType, by_plural

# ---------------------------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------------------------

_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN_RE = re.compile(rf"^{_DNS1123_LABEL}(\.{_DNS1123_LABEL})*$")
_DNS1123_LABEL_RE = re.compile(rf"^{_DNS1123_LABEL}$")


def name_errors(rt: ResourceType, name: str) -> list[dict[str, str]]:
    """Field errors for ``metadata.name`` (namespaces are DNS-1123 labels, the rest subdomains)."""
    path = "metadata.name"
    if rt.plural == "namespaces":
        if len(name) > 63 or not _DNS1123_LABEL_RE.match(name):
            return [
                {
                    "reason": "FieldValueInvalid",
                    "field": path,
                    "message": f'Invalid value: "{name}": a lowercase RFC 1123 label must consist of '
                    "lower case "
                    "alphanumeric characters or '-', and must start and end with an alphanumeric character "
                    "(e.g. 'my-name',  or '123-abc', regex used for validation is "
                    f"'{_DNS1123_LABEL}')",
                }
            ]
        return []
    if len(name) > 253 or not _DNS1123_SUBDOMAIN_RE.match(name):
        return [
            {
                "reason": "FieldValueInvalid",
                "field": path,
                "message": f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist of '
                "lower case "
                "alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character "
                "(e.g. 'example.com', regex used for validation is "
                f"'{_DNS1123_LABEL}(\\.{_DNS1123_LABEL})*')",
            }
        ]
    return []


# ---------------------------------------------------------------------------------------------
# Schema checks (what the CRDs' OpenAPI schema and CEL rules enforce on a real cluster)
# ---------------------------------------------------------------------------------------------

Validator = Callable[[dict[str, Any] | None, dict[str, Any]], None]

_RESTORE_URL_SCHEME = re.compile(r"^(https|s3)://")
RESTORE_URL_MAX_LENGTH = 1024


@dataclass
class FieldErrors:
    """Collects field errors and raises one 422 ``Invalid`` like the real API server."""

    resource: ResourceType
    obj: dict[str, Any]
    causes: list[dict[str, str]] = field(default_factory=list)

    def add(self, path: str, message: str, reason: str = "FieldValueInvalid") -> None:
        """Record one error on the field ``path``."""
        self.causes.append({"reason": reason, "message": message, "field": path})

    def raise_if_any(self) -> None:
        """Raise :class:`~hcp_sandbox.errors.ApiError` 422 when errors were recorded."""
        if self.causes:
            raise invalid(self.resource, self.obj.get("metadata", {}).get("name", ""), self.causes)


def _get_path(obj: dict[str, Any], *keys: str) -> Any:
    for k in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(k)  # type: ignore[assignment]
    return obj


# The HostedCluster CRD of openshift/hypershift (commit 3ee9615567,
# cmd/install/assets/crds/hypershift-operator/zz_generated.crd-manifests/
# hostedclusters-Hypershift-Default.crd.yaml;
# the Go types in api/hypershift/v1beta1/hostedcluster_types.go), for the fields the backup/restore
# procedure reads or writes: spec.pausedUntil, spec.etcd, spec.secretEncryption (aescbc and kms),
# spec.serviceAccountSigningKey, with spec.issuerURL and spec.controllerAvailabilityPolicy (their
# defaults and immutability). Other fields are stored as given.

# The spec's schema defaults (structural defaulting, before validation).
HOSTEDCLUSTER_SPEC_DEFAULTS: dict[str, Any] = {
    "capabilities": {},
    "controllerAvailabilityPolicy": "HighlyAvailable",
    "etcd": {
        "managed": {"storage": {"persistentVolume": {"size": "8Gi"}, "type": "PersistentVolume"}},
        "managementType": "Managed",
    },
    "infrastructureAvailabilityPolicy": "SingleReplica",
    "issuerURL": "https://kubernetes.default.svc",
    "networking": {
        "clusterNetwork": [{"cidr": "10.132.0.0/14"}],
        "networkType": "OVNKubernetes",
        "serviceNetwork": [{"cidr": "172.31.0.0/16"}],
    },
    "olmCatalogPlacement": "management",
}
_QUANTITY = re.compile(
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
_PAUSED_UNTIL = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}.*$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_CLIENT_ID_MESSAGE = (
    "the client ID of a managed identity must be a valid UUID. It should be 5 groups of hyphen "
    "separated hexadecimal characters in the form 8-4-4-4-12."
)


def default_hostedcluster(obj: dict[str, Any]) -> None:
    """The CRD's defaults, in place: top-level spec fields, the etcd volume size, reference names."""
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    for key, value in HOSTEDCLUSTER_SPEC_DEFAULTS.items():
        spec.setdefault(key, copy.deepcopy(value))
    managed = _get_path(spec, "etcd", "managed", "storage", "persistentVolume")
    if isinstance(managed, dict):
        managed.setdefault("size", "8Gi")
    refs = [
        _get_path(spec, "serviceAccountSigningKey"),
        _get_path(spec, "secretEncryption", "aescbc", "activeKey"),
        _get_path(spec, "secretEncryption", "aescbc", "backupKey"),
        _get_path(spec, "etcd", "unmanaged", "tls", "clientSecret"),
        _get_path(spec, "secretEncryption", "kms", "ibmcloud", "auth", "unmanaged", "credentials"),
    ]
    for ref in refs:
        if isinstance(ref, dict):
            ref.setdefault("name", "")


_JSON_TYPES = {str: "string", bool: "boolean", int: "integer", float: "number", list: "array", dict: "object"}


def _type_name(value: Any) -> str:
    return "null" if value is None else _JSON_TYPES.get(type(value), "object")


class _Schema:
    """OpenAPI checks of one object, with the API server's messages (apiextensions-apiserver)."""

    def __init__(self, errors: FieldErrors) -> None:
        self.errors = errors

    def typed(self, path: str, value: Any, kind: str) -> bool:
        if _type_name(value) == kind or (kind == "number" and isinstance(value, int)):
            return True
        got = _type_name(value)
        self.errors.add(
            path,
            f'Invalid value: "{got}": {path} in body must be of type {kind}: "{got}"',
            "FieldValueTypeInvalid",
        )
        return False

    def string(
        self,
        path: str,
        value: Any,
        *,
        min_length: int | None = None,
        max_length: int | None = None,
        enum: tuple[str, ...] | None = None,
        pattern: re.Pattern[str] | None = None,
    ) -> bool:
        """A string's checks; True when every one passed."""
        if not self.typed(path, value, "string"):
            return False
        ok = True
        if enum is not None and value not in enum:
            supported = ", ".join(f'"{e}"' for e in enum)
            self.errors.add(
                path, f'Unsupported value: "{value}": supported values: {supported}', "FieldValueNotSupported"
            )
            ok = False
        if max_length is not None and len(value) > max_length:
            self.errors.add(path, f"Too long: may not be more than {max_length} bytes", "FieldValueTooLong")
            ok = False
        if min_length is not None and len(value) < min_length:
            self.errors.add(
                path, f'Invalid value: "{value}": {path} in body should be at least {min_length} chars long'
            )
            ok = False
        if pattern is not None and not pattern.match(value):
            self.errors.add(
                path, f"Invalid value: \"{value}\": {path} in body should match '{pattern.pattern}'"
            )
            ok = False
        return ok

    def required(self, path: str, obj: dict[str, Any], *keys: str) -> None:
        for key in keys:
            if key not in obj:
                self.errors.add(f"{path}.{key}", "Required value", "FieldValueRequired")

    def rule(self, path: str, ok: bool, value: Any, message: str) -> None:
        """A CEL rule of the CRD (``x-kubernetes-validations``)."""
        if not ok:
            self.errors.add(path, f'Invalid value: "{_type_name(value)}": {message}')

    def obj(self, path: str, value: Any) -> bool:
        return self.typed(path, value, "object")


def _has(obj: Any, *keys: str) -> bool:
    for key in keys:
        if not isinstance(obj, dict) or key not in obj:
            return False
        obj = obj[key]
    return True


def _check_paused_until(s: _Schema, value: Any) -> None:
    path = "spec.pausedUntil"
    if s.string(path, value, min_length=4, max_length=35):
        s.rule(
            path,
            bool(_PAUSED_UNTIL.match(value)) or value in ("true", "false", "True", "False"),
            value,
            "PausedUntil must be a date in RFC3339 format or 'True', 'true', 'False' or 'false'",
        )


def _check_reference(s: _Schema, path: str, value: Any) -> None:
    if s.obj(path, value) and "name" in value:
        s.string(f"{path}.name", value["name"])


def _check_etcd(s: _Schema, etcd: Any, old: Any) -> None:
    path = "spec.etcd"
    if not s.obj(path, etcd):
        return
    s.required(path, etcd, "managementType")
    mtype = etcd.get("managementType")
    valid_type = "managementType" in etcd and s.string(
        f"{path}.managementType", mtype, enum=("Managed", "Unmanaged")
    )
    if valid_type and _has(old, "managementType"):
        s.rule(f"{path}.managementType", mtype == old["managementType"], mtype, "managementType is immutable")
    s.rule(
        path,
        ("managed" in etcd) if mtype == "Managed" else ("managed" not in etcd),
        etcd,
        "Only managed configuration must be set when managementType is Managed",
    )
    s.rule(
        path,
        ("unmanaged" in etcd) if mtype == "Unmanaged" else ("unmanaged" not in etcd),
        etcd,
        "Only unmanaged configuration must be set when managementType is Unmanaged",
    )
    old = old if isinstance(old, dict) else {}
    if "managed" in etcd and s.obj(f"{path}.managed", etcd["managed"]):
        managed = etcd["managed"]
        s.required(f"{path}.managed", managed, "storage")
        if "storage" in managed:
            _check_etcd_storage(s, managed["storage"], _get_path(old, "managed", "storage"))
    if "unmanaged" in etcd and s.obj(f"{path}.unmanaged", etcd["unmanaged"]):
        unmanaged, upath = etcd["unmanaged"], f"{path}.unmanaged"
        s.required(upath, unmanaged, "endpoint", "tls")
        if "endpoint" in unmanaged:
            s.string(
                f"{upath}.endpoint", unmanaged["endpoint"], max_length=255, pattern=re.compile(r"^https://")
            )
        if "tls" in unmanaged and s.obj(f"{upath}.tls", unmanaged["tls"]):
            s.required(f"{upath}.tls", unmanaged["tls"], "clientSecret")
            if "clientSecret" in unmanaged["tls"]:
                _check_reference(s, f"{upath}.tls.clientSecret", unmanaged["tls"]["clientSecret"])


def _check_etcd_storage(s: _Schema, storage: Any, old: Any) -> None:
    path = "spec.etcd.managed.storage"
    if not s.obj(path, storage):
        return
    old = old if isinstance(old, dict) else None
    s.required(path, storage, "type")
    if "type" in storage:
        s.string(f"{path}.type", storage["type"], enum=("PersistentVolume",))
    pv = storage.get("persistentVolume")
    if "persistentVolume" in storage and s.obj(f"{path}.persistentVolume", pv):
        old_pv = _get_path(old or {}, "persistentVolume") or {}
        size = pv.get("size")
        if "size" in pv:
            spath = f"{path}.persistentVolume.size"
            if isinstance(size, bool) or not isinstance(size, (int, str)):
                s.typed(spath, size, "string")
            elif isinstance(size, str) and not _QUANTITY.match(size):
                s.errors.add(
                    spath, f"Invalid value: \"{size}\": {spath} in body should match '{_QUANTITY.pattern}'"
                )
            if isinstance(old_pv, dict) and "size" in old_pv:
                s.rule(spath, size == old_pv["size"], size, "Etcd PV storage size is immutable")
        if "storageClassName" in pv:
            cpath = f"{path}.persistentVolume.storageClassName"
            s.string(cpath, pv["storageClassName"], max_length=255)
            if isinstance(old_pv, dict) and "storageClassName" in old_pv:
                s.rule(cpath, pv["storageClassName"] == old_pv["storageClassName"], pv["storageClassName"],
                       "storageClassName is immutable")  # fmt: skip
    urls = storage.get("restoreSnapshotURL")
    upath = f"{path}.restoreSnapshotURL"
    if "restoreSnapshotURL" in storage and s.typed(upath, urls, "array"):
        if len(urls) > 1:
            s.errors.add(upath, f"Too many: {len(urls)}: must have at most 1 items", "FieldValueTooMany")
        typed = True
        for i, url in enumerate(urls):
            typed &= isinstance(url, str)
            s.string(f"{upath}[{i}]", url, max_length=RESTORE_URL_MAX_LENGTH)
            if url in urls[:i]:
                s.errors.add(f"{upath}[{i}]", f'Duplicate value: "{url}"', "FieldValueDuplicate")
        # The API server skips CEL rules after a type error only (apiextensions' hasBlockingErr).
        if typed:
            s.rule(upath, len(urls) <= 1, urls, "RestoreSnapshotURL shouldn't contain more than 1 entry")
            if old is not None and "restoreSnapshotURL" in old:
                s.rule(upath, urls == old["restoreSnapshotURL"], urls, "restoreSnapshotURL is immutable")
            s.rule(
                upath,
                not urls or bool(_RESTORE_URL_SCHEME.match(urls[0])),
                urls,
                "restoreSnapshotURL must be a valid URL with scheme https or s3",
            )
    if old is not None:
        s.rule(
            path,
            ("restoreSnapshotURL" in storage) == ("restoreSnapshotURL" in old),
            storage,
            "restoreSnapshotURL cannot be added or removed after creation",
        )


def _check_secret_encryption(s: _Schema, enc: Any, old: Any) -> None:
    path = "spec.secretEncryption"
    if not s.obj(path, enc):
        return
    s.required(path, enc, "type")
    if "type" in enc:
        s.string(f"{path}.type", enc["type"], enum=("kms", "aescbc"))
    if "aescbc" in enc and s.obj(f"{path}.aescbc", enc["aescbc"]):
        s.required(f"{path}.aescbc", enc["aescbc"], "activeKey")
        for key in ("activeKey", "backupKey"):
            if key in enc["aescbc"]:
                _check_reference(s, f"{path}.aescbc.{key}", enc["aescbc"][key])
    if "kms" in enc and s.obj(f"{path}.kms", enc["kms"]):
        kms, kpath = enc["kms"], f"{path}.kms"
        s.required(kpath, kms, "provider")
        if "provider" in kms:
            s.string(f"{kpath}.provider", kms["provider"], enum=("IBMCloud", "AWS", "Azure"))
        old_kms = _get_path(old or {}, "kms") or {}
        if "aws" in kms:
            _check_kms_aws(s, f"{kpath}.aws", kms["aws"])
        if "azure" in kms:
            _check_kms_azure(s, f"{kpath}.azure", kms["azure"], _get_path(old_kms, "azure"))
        if "ibmcloud" in kms:
            _check_kms_ibmcloud(s, f"{kpath}.ibmcloud", kms["ibmcloud"])


def _check_kms_aws(s: _Schema, path: str, aws: Any) -> None:
    if not s.obj(path, aws):
        return
    s.required(path, aws, "activeKey", "auth", "region")
    for key in ("activeKey", "backupKey"):
        if key in aws and s.obj(f"{path}.{key}", aws[key]):
            s.required(f"{path}.{key}", aws[key], "arn")
            arn = aws[key].get("arn")
            if "arn" in aws[key] and s.string(f"{path}.{key}.arn", arn, min_length=1, max_length=2048):
                s.rule(f"{path}.{key}.arn", arn.startswith("arn:"), arn, "arn must start with 'arn:'")
    if "auth" in aws and s.obj(f"{path}.auth", aws["auth"]):
        s.required(f"{path}.auth", aws["auth"], "awsKms")
        if "awsKms" in aws["auth"]:
            s.string(f"{path}.auth.awsKms", aws["auth"]["awsKms"], max_length=2048)
    if "region" in aws:
        s.string(f"{path}.region", aws["region"], max_length=255)


def _check_client_id(s: _Schema, path: str, value: Any) -> None:
    if s.string(path, value, min_length=36, max_length=36, pattern=_UUID):
        s.rule(path, bool(_UUID.match(value)), value, _CLIENT_ID_MESSAGE)


def _check_kms_azure(s: _Schema, path: str, azure: Any, old: Any) -> None:
    if not s.obj(path, azure):
        return
    s.required(path, azure, "activeKey")
    for key in ("activeKey", "backupKey"):
        if key in azure and s.obj(f"{path}.{key}", azure[key]):
            s.required(f"{path}.{key}", azure[key], "keyName", "keyVaultName", "keyVersion")
            for field_name in ("keyName", "keyVaultName", "keyVersion"):
                if field_name in azure[key]:
                    s.string(
                        f"{path}.{key}.{field_name}", azure[key][field_name], min_length=1, max_length=255
                    )
    if "keyVaultAccess" in azure:
        s.string(f"{path}.keyVaultAccess", azure["keyVaultAccess"], enum=("Public", "Private", ""))
    if "keyVaultType" in azure:
        s.string(f"{path}.keyVaultType", azure["keyVaultType"], enum=("KeyVault", "ManagedHSM"))
    if "kms" in azure and s.obj(f"{path}.kms", azure["kms"]):
        inner, ipath = azure["kms"], f"{path}.kms"
        s.required(ipath, inner, "credentialsSecretName", "objectEncoding")
        if "clientID" in inner:
            _check_client_id(s, f"{ipath}.clientID", inner["clientID"])
        if "credentialsSecretName" in inner:
            s.string(f"{ipath}.credentialsSecretName", inner["credentialsSecretName"], min_length=1,
                     max_length=127, pattern=re.compile(r"^[a-zA-Z0-9-]+$"))  # fmt: skip
        if "objectEncoding" in inner:
            s.string(f"{ipath}.objectEncoding", inner["objectEncoding"], enum=("utf-8", "hex", "base64"))
    if "workloadIdentity" in azure and s.obj(f"{path}.workloadIdentity", azure["workloadIdentity"]):
        s.required(f"{path}.workloadIdentity", azure["workloadIdentity"], "clientID")
        if "clientID" in azure["workloadIdentity"]:
            _check_client_id(s, f"{path}.workloadIdentity.clientID", azure["workloadIdentity"]["clientID"])
    active, backup = azure.get("activeKey") or {}, azure.get("backupKey")
    s.rule(
        path,
        backup is None or _get_path(backup, "keyVaultName") == _get_path(active, "keyVaultName"),
        azure,
        "backupKey.keyVaultName must match activeKey.keyVaultName; "
        "both keys must reside in the same Key Vault",
    )
    if isinstance(old, dict):
        s.rule(
            path,
            azure.get("keyVaultType", "KeyVault") == old.get("keyVaultType", "KeyVault"),
            azure,
            "keyVaultType is immutable",
        )
    s.rule(path, not ("kms" in azure and "workloadIdentity" in azure), azure,
           "kms and workloadIdentity are mutually exclusive")  # fmt: skip
    s.rule(
        path,
        "kms" in azure or "workloadIdentity" in azure,
        azure,
        "one of kms or workloadIdentity must be set",
    )
    if isinstance(old, dict):
        s.rule(
            path,
            ("kms" in azure) == ("kms" in old),
            azure,
            "the KMS authentication mode is immutable once set",
        )


def _check_kms_ibmcloud(s: _Schema, path: str, ibm: Any) -> None:
    if not s.obj(path, ibm):
        return
    s.required(path, ibm, "auth", "keyList", "region")
    if "auth" in ibm and s.obj(f"{path}.auth", ibm["auth"]):
        s.required(f"{path}.auth", ibm["auth"], "type")
        if "type" in ibm["auth"]:
            s.string(f"{path}.auth.type", ibm["auth"]["type"], enum=("Managed", "Unmanaged"))
        unmanaged = ibm["auth"].get("unmanaged")
        if "unmanaged" in ibm["auth"] and s.obj(f"{path}.auth.unmanaged", unmanaged):
            s.required(f"{path}.auth.unmanaged", unmanaged, "credentials")
    keys = ibm.get("keyList")
    if "keyList" in ibm and s.typed(f"{path}.keyList", keys, "array"):
        if len(keys) > 100:
            s.errors.add(
                f"{path}.keyList", f"Too many: {len(keys)}: must have at most 100 items", "FieldValueTooMany"
            )
        for i, key in enumerate(keys):
            kpath = f"{path}.keyList[{i}]"
            if not s.obj(kpath, key):
                continue
            s.required(kpath, key, "correlationID", "crkID", "instanceID", "keyVersion", "url")
            for name in ("correlationID", "crkID", "instanceID"):
                if name in key:
                    s.string(f"{kpath}.{name}", key[name], min_length=1, max_length=255)
            version = key.get("keyVersion")
            typed = "keyVersion" in key and s.typed(f"{kpath}.keyVersion", version, "integer")
            if typed and not 0 <= version <= 2147483647:
                s.errors.add(f"{kpath}.keyVersion", f"Invalid value: {version}: out of range [0, 2147483647]")
            if "url" in key and s.string(f"{kpath}.url", key["url"], min_length=1, max_length=2048):
                s.rule(
                    f"{kpath}.url",
                    key["url"].startswith("https://"),
                    key["url"],
                    "url must start with 'https://'",
                )
    if "region" in ibm:
        s.string(f"{path}.region", ibm["region"], max_length=255)


def validate_hostedcluster(old: dict[str, Any] | None, new: dict[str, Any]) -> None:
    """
    The HostedCluster CRD's checks on the fields the backup/restore procedure touches (see above):
    types, enums, lengths, patterns, its CEL rules, immutability. ``old`` is None on create.
    """
    errors = FieldErrors(by_plural("hostedclusters"), new)
    s = _Schema(errors)
    spec = new.get("spec")
    old_spec = (old or {}).get("spec") if old is not None else None
    old_spec = old_spec if isinstance(old_spec, dict) else None
    if not isinstance(spec, dict):
        errors.raise_if_any()
        return
    if "pausedUntil" in spec and spec["pausedUntil"] is not None:
        _check_paused_until(s, spec["pausedUntil"])
    if "etcd" in spec:
        _check_etcd(s, spec["etcd"], (old_spec or {}).get("etcd") if old_spec is not None else None)
    if "secretEncryption" in spec:
        _check_secret_encryption(s, spec["secretEncryption"], (old_spec or {}).get("secretEncryption"))
    if "serviceAccountSigningKey" in spec:
        _check_reference(s, "spec.serviceAccountSigningKey", spec["serviceAccountSigningKey"])
    if "issuerURL" in spec and s.string("spec.issuerURL", spec["issuerURL"], max_length=255):
        url = spec["issuerURL"]
        parsed = urllib.parse.urlparse(url)
        s.rule(
            "spec.issuerURL",
            bool(parsed.scheme and parsed.netloc),
            url,
            "issuerURL must be a valid absolute URL",
        )
        if old_spec is not None and "issuerURL" in old_spec:
            s.rule("spec.issuerURL", url == old_spec["issuerURL"], url, "issuerURL is immutable")
    policy = spec.get("controllerAvailabilityPolicy")
    valid_policy = "controllerAvailabilityPolicy" in spec and s.string(
        "spec.controllerAvailabilityPolicy", policy, enum=("HighlyAvailable", "SingleReplica")
    )
    if valid_policy and old_spec is not None and "controllerAvailabilityPolicy" in old_spec:
        s.rule(
            "spec.controllerAvailabilityPolicy",
            policy == old_spec["controllerAvailabilityPolicy"],
            policy,
            "ControllerAvailabilityPolicy is immutable",
        )
    # The spec's own rules that involve these fields.
    s.rule(
        "spec",
        "issuerURL" in spec or "serviceAccountSigningKey" not in spec,
        spec,
        "If serviceAccountSigningKey is set, issuerURL must be set",
    )
    if old_spec is not None:
        s.rule(
            "spec",
            "secretEncryption" not in old_spec or "secretEncryption" in spec,
            spec,
            "secretEncryption cannot be removed once configured",
        )
    errors.raise_if_any()


VALIDATORS: dict[str, tuple[Validator, ...]] = {
    "hostedclusters": (validate_hostedcluster,),
}
DEFAULTERS: dict[str, Callable[[dict[str, Any]], None]] = {"hostedclusters": default_hostedcluster}
