"""Manifests shaped like ``hcp create cluster aws --render --render-sensitive``.

The same objects create the sandbox's own hosted clusters at ``up``, so what a restore renders and
what the sandbox runs never drift apart.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from typing import Any

import yaml

from hcp_sandbox.layout import HOSTED_CLUSTER_NAMESPACE

RELEASE_IMAGE = "quay.io/openshift-release-dev/ocp-release:4.19.0-multi"
BASE_DOMAIN = "sandbox.example.com"
REGION = "us-east-1"
# The AWS identity `hcp create iam aws` makes (cmd/infra/aws/create_iam.go, iam.go at 3ee96155): an
# OIDC issuer in the operator's OIDC bucket under the infraID, IAM roles and the workers' instance
# profile named after the infraID. Nothing in the sandbox calls AWS with them; a restore must keep them.
OIDC_BUCKET = "sandbox-oidc"
ACCOUNT = "123456789012"
ROLES = {
    "ingressARN": "openshift-ingress",
    "imageRegistryARN": "openshift-image-registry",
    "storageARN": "aws-ebs-csi-driver-controller",
    "networkARN": "cloud-network-config-controller",
    "kubeCloudControllerARN": "cloud-controller",
    "nodePoolManagementARN": "node-pool",
    "controlPlaneOperatorARN": "control-plane-operator",
}


def issuer_url(infra_id: str) -> str:
    """``oidcDiscoveryURL`` of ``cmd/infra/aws/create_iam.go``."""
    return f"https://{OIDC_BUCKET}.s3.{REGION}.amazonaws.com/{infra_id}"


def _services(name: str, external_dns_domain: str | None) -> list[dict[str, Any]]:
    """``GetIngressServicePublishingStrategyMapping`` (``cmd/cluster/core/create.go``) and, with
    ``--external-dns-domain``, the Route hostnames ``<service>-<name>.<domain>`` of
    ``cmd/cluster/aws/create.go: ApplyPlatformSpecifics`` (public endpoint access)."""
    api = "Route" if external_dns_domain else "LoadBalancer"
    services = []
    for service, kind, prefix in (
        ("APIServer", api, "api"),
        ("Ignition", "Route", "ignition"),
        ("Konnectivity", "Route", "konnectivity"),
        ("OAuthServer", "Route", "oauth"),
    ):
        strategy: dict[str, Any] = {"type": kind}
        if external_dns_domain:
            strategy["route"] = {"hostname": f"{prefix}-{name}.{external_dns_domain}"}
        services.append({"service": service, "servicePublishingStrategy": strategy})
    return services


def encryption_key_secret_name(name: str) -> str:
    """The Secret that ``spec.secretEncryption.aescbc.activeKey`` names."""
    return f"{name}-etcd-encryption-key"


def kms_provider_role_arn(infra_id: str) -> str:
    """The role aws-encryption-provider assumes (``cmd/infra/aws/iam.go``: ``kms-provider``)."""
    return f"arn:aws:iam::{ACCOUNT}:role/{infra_id}-kms-provider"


def _secret_encryption(name: str, infra_id: str, kms_key_arn: str | None) -> dict[str, Any]:
    """``spec.secretEncryption`` as ``hcp create cluster aws`` renders it: AES-CBC with a key Secret
    (``cmd/cluster/core/create.go``), or with ``--kms-key-arn`` AWS KMS (``cmd/cluster/aws/create.go``)."""
    if kms_key_arn is None:
        return {"type": "aescbc", "aescbc": {"activeKey": {"name": encryption_key_secret_name(name)}}}
    return {
        "type": "kms",
        "kms": {
            "provider": "AWS",
            "aws": {
                "region": REGION,
                "activeKey": {"arn": kms_key_arn},
                "auth": {"awsKms": kms_provider_role_arn(infra_id)},
            },
        },
    }


def _secret(name: str, namespace: str, data: dict[str, bytes]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"hypershift.openshift.io/safe-to-delete-with-cluster": "true"},
        },
        "type": "Opaque",
        "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
    }


def manifests(
    name: str,
    namespace: str = HOSTED_CLUSTER_NAMESPACE,
    members: int = 3,
    *,
    encryption_key: bytes | None = None,
    infra_id: str | None = None,
    external_dns_domain: str | None = None,
    kms_key_arn: str | None = None,
) -> list[dict[str, Any]]:
    """Namespace, pull-secret and SSH-key Secrets, a new encryption-key Secret, HostedCluster, NodePool.

    :param encryption_key: the 32-byte aescbc key; a NEW random one when ``None`` (what
        ``--render-sensitive`` does: a restore must put the saved key in its place).
    :param kms_key_arn: ``--kms-key-arn``: ``secretEncryption.type: kms`` with this AWS KMS key, and
        no encryption-key Secret.
    :param infra_id: the infra id (``--infra-json``'s); ``<name>-<5 random>`` when ``None``, as hcp's.
    :param external_dns_domain: ``--external-dns-domain``: services get hostnames under it.
    """
    if members not in (1, 3):
        raise ValueError("members must be 3 (HighlyAvailable) or 1 (SingleReplica)")
    policy = "HighlyAvailable" if members == 3 else "SingleReplica"
    key = encryption_key if encryption_key is not None else os.urandom(32)
    infra_id = infra_id or f"{name}-{secrets.token_hex(3)[:5]}"
    pull_secret = json.dumps({"auths": {"quay.io": {"auth": base64.b64encode(b"sandbox:sandbox").decode()}}})
    ssh_key = f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{secrets.token_urlsafe(32)} sandbox"
    aws_platform = {
        "type": "AWS",
        "aws": {
            "region": REGION,
            "endpointAccess": "Public",
            "cloudProviderConfig": {
                "vpc": "vpc-0sandbox",
                "zone": f"{REGION}a",
                "subnet": {"id": "subnet-0sandbox"},
            },
            "rolesRef": {k: f"arn:aws:iam::{ACCOUNT}:role/{infra_id}-{v}" for k, v in ROLES.items()},
        },
    }
    hosted_cluster = {
        "apiVersion": "hypershift.openshift.io/v1beta1",
        "kind": "HostedCluster",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "release": {"image": RELEASE_IMAGE},
            "pullSecret": {"name": f"{name}-pull-secret"},
            "sshKey": {"name": f"{name}-ssh-key"},
            "infraID": infra_id,
            "issuerURL": issuer_url(infra_id),
            "dns": {"baseDomain": BASE_DOMAIN},
            "networking": {
                "clusterNetwork": [{"cidr": "10.132.0.0/14"}],
                "serviceNetwork": [{"cidr": "172.31.0.0/16"}],
                "machineNetwork": [{"cidr": "10.0.0.0/16"}],
                "networkType": "OVNKubernetes",
            },
            "controllerAvailabilityPolicy": policy,
            "infrastructureAvailabilityPolicy": policy,
            "platform": aws_platform,
            "etcd": {
                "managementType": "Managed",
                "managed": {
                    "storage": {
                        "type": "PersistentVolume",
                        "persistentVolume": {"size": "8Gi", "storageClassName": "gp3-csi"},
                    }
                },
            },
            "secretEncryption": _secret_encryption(name, infra_id, kms_key_arn),
            "services": _services(name, external_dns_domain),
            "fips": False,
            "olmCatalogPlacement": "management",
        },
        "status": {"controlPlaneEndpoint": {"host": "", "port": 0}},
    }
    node_pool = {
        "apiVersion": "hypershift.openshift.io/v1beta1",
        "kind": "NodePool",
        "metadata": {"name": f"{name}-{REGION}a", "namespace": namespace},
        "spec": {
            "clusterName": name,
            "replicas": 2,
            "management": {"upgradeType": "Replace", "autoRepair": False},
            "release": {"image": RELEASE_IMAGE},
            "platform": {
                "type": "AWS",
                "aws": {
                    "instanceType": "m6i.xlarge",
                    "instanceProfile": f"{infra_id}-worker",  # iam.go: DefaultProfileName
                    "subnet": {"id": "subnet-0sandbox"},
                },
            },
        },
        "status": {"replicas": 0},
    }
    key_secret = [] if kms_key_arn else [_secret(encryption_key_secret_name(name), namespace, {"key": key})]
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        _secret(f"{name}-pull-secret", namespace, {".dockerconfigjson": pull_secret.encode()}),
        _secret(f"{name}-ssh-key", namespace, {"id_rsa.pub": ssh_key.encode()}),
        *key_secret,
        hosted_cluster,
        node_pool,
    ]


def to_yaml(objects: list[dict[str, Any]]) -> str:
    """Multi-document YAML, as ``hcp ... --render`` prints it."""
    return yaml.safe_dump_all(objects, sort_keys=False, explicit_start=True)
