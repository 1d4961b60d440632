"""The control plane's service-account signing key: the Secret ``sa-signing-key`` of the control-plane
namespace, as HyperShift makes it (read at commit 3ee9615567):

- the HostedCluster controller, when ``spec.serviceAccountSigningKey`` names a Secret next to the
  HostedCluster, copies its ``key`` into ``service-account.key`` and the PEM public key derived from
  it, followed by the Secret's ``old-key.pub`` if any, into ``service-account.pub``
  (``hypershift-operator/controllers/hostedcluster/hostedcluster_controller.go:
  reconcileServiceAccountSigningKey``, ``serviceAccountSigningKeyBytes``); a reference to a missing
  Secret or one without ``key`` is an invalid configuration and copies nothing;
- the control-plane operator then generates a key (RSA 2048, PKCS#1 ``RSA PRIVATE KEY`` and a PKIX
  public key under the header ``RSA PUBLIC KEY``) only when the Secret lacks either field
  (``control-plane-operator/controllers/hostedcontrolplane/pki/sa.go:
  ReconcileServiceAccountSigningKeySecret``, ``support/certs/tls.go``).

Upstream reconciles both on every pass; the sandbox does it once, when the control plane is
provisioned (nothing here rotates the key). The sandbox's kube-apiserver issues no tokens: the Secret
is what a restore's verification compares.
"""

from __future__ import annotations

import base64
import logging
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from hcp_sandbox.controllers.cluster import ClusterRuntime, Context

log = logging.getLogger(__name__)

SECRET = "sa-signing-key"  # noqa: S105 (a Secret's name)
PRIVATE_KEY = "service-account.key"
PUBLIC_KEY = "service-account.pub"
SPEC_KEY = "key"
OLD_PUBLIC_KEY = "old-key.pub"  # hyperv1.ServiceAccountOldPublicKeySecretKey
KEY_SIZE = 2048  # support/certs/tls.go: keySize


def public_key_pem(private_pem: bytes) -> bytes:
    """``certs.PublicKeyToPem``: the PKIX DER of the public key, under the header ``RSA PUBLIC KEY``."""
    key = serialization.load_pem_private_key(private_pem, password=None)
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    body = base64.encodebytes(der).decode().replace("\n", "")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    pem = "-----BEGIN RSA PUBLIC KEY-----\n" + "\n".join(lines) + "\n-----END RSA PUBLIC KEY-----\n"
    return pem.encode()


def generate_private_key_pem() -> bytes:
    """``certs.PrivateKey`` + ``certs.PrivateKeyToPem``: RSA 2048, PKCS#1 PEM."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_SIZE)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _from_spec(ctx: Context, hc: dict[str, Any]) -> tuple[bytes, bytes] | None:
    """The HostedCluster controller's private and public key bytes, or None (no or invalid reference)."""
    ref = (hc.get("spec") or {}).get("serviceAccountSigningKey") or {}
    if not ref.get("name"):
        return None
    namespace = hc["metadata"]["namespace"]
    data = (ctx.store.find("secrets", namespace, ref["name"]) or {}).get("data") or {}
    encoded = data.get(SPEC_KEY)
    if not encoded:
        log.warning("serviceAccountSigningKey Secret %s/%s with %r not found", namespace, ref["name"], "key")
        return None
    private = base64.b64decode(encoded)
    try:
        public = public_key_pem(private)
    except (ValueError, TypeError):
        log.warning("serviceAccountSigningKey Secret %s/%s: not a private key", namespace, ref["name"])
        return None
    old = data.get(OLD_PUBLIC_KEY)
    return private, public + (base64.b64decode(old) if old else b"")


def reconcile_service_account_signing_key(ctx: Context, rt: ClusterRuntime, hc: dict[str, Any]) -> None:
    """Make ``sa-signing-key`` in the control-plane namespace: from the spec's Secret, else generated.

    :param ctx: the controllers' context.
    :param rt: the cluster.
    :param hc: the HostedCluster.
    """
    ns = rt.cp_namespace
    existing = ctx.store.find("secrets", ns, SECRET)
    data = dict((existing or {}).get("data") or {})
    brought = _from_spec(ctx, hc)
    if brought is not None:
        data[PRIVATE_KEY], data[PUBLIC_KEY] = (base64.b64encode(v).decode() for v in brought)
    elif not (data.get(PRIVATE_KEY) and data.get(PUBLIC_KEY)):
        private = generate_private_key_pem()
        data[PRIVATE_KEY] = base64.b64encode(private).decode()
        data[PUBLIC_KEY] = base64.b64encode(public_key_pem(private)).decode()
    if existing is None:
        ctx.ensure("secrets", {"metadata": {"name": SECRET, "namespace": ns}, "type": "Opaque", "data": data})
    elif data != existing.get("data"):
        existing = {**existing, "data": data}
        existing["metadata"] = {k: v for k, v in existing["metadata"].items() if k != "resourceVersion"}
        ctx.store.replace("secrets", existing)
