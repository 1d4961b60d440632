"""The service-account signing key of a hosted control plane, and its fingerprint (pure).

HyperShift (openshift/hypershift ``main`` 3ee9615567) keeps the key kube-apiserver signs
service-account tokens with in the Secret ``sa-signing-key`` of the control-plane namespace
(``control-plane-operator/controllers/hostedcontrolplane/manifests/pki.go``), under
``service-account.key`` (PKCS#1 PEM) and ``service-account.pub`` (``pki/kas.go``). The control-plane
operator generates it (``pki/sa.go``) unless the HostedCluster brings its own:
``spec.serviceAccountSigningKey`` names a Secret next to the HostedCluster with the private key
under ``key`` (``api/hypershift/v1beta1/hostedcluster_types.go``), which the HostedCluster
controller copies into ``sa-signing-key`` (``hostedcluster_controller.go:
reconcileServiceAccountSigningKey``). A restored cluster given the escrowed key under ``key`` signs
and validates tokens as the lost one did.
"""

from __future__ import annotations

import base64
import hashlib
import re

CONTROL_PLANE_SECRET = "sa-signing-key"  # noqa: S105 (a Secret's name)
PRIVATE_KEY = "service-account.key"
PUBLIC_KEY = "service-account.pub"
# The data key of a spec.serviceAccountSigningKey Secret (hyperv1.ServiceAccountSigningKeySecretKey).
SPEC_SECRET_KEY = "key"  # noqa: S105 (a data key's name)
# An escrowed key object is one PEM private key: anything larger is not one.
MAX_BYTES = 64 * 1024
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z ]+)-----\s*(.+?)\s*-----END \1-----", re.S)


class ServiceAccountKeyError(ValueError):
    """Bytes that are not a PEM key of the kind expected."""


def restore_secret_name(hosted_cluster_name: str) -> str:
    """``<name>-sa-token-issuer-key``: the Secret ``hcp create cluster`` names for a key it is given
    (``cmd/cluster/aws/create.go: serviceAccountTokenIssuerSecret``); a restore that adds one uses it.

    :param hosted_cluster_name: the restored HostedCluster's name.
    """
    return f"{hosted_cluster_name}-sa-token-issuer-key"


def _spki_sha256(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


# ``cryptography`` is imported where a key is read: DAG files import this module (through the
# operators) at every parse, and its serialization module costs milliseconds (BENCHMARKS.md, figure 6).


def private_key_fingerprint(pem: bytes) -> str:
    """Hex SHA-256 of the DER SubjectPublicKeyInfo of a PEM private key's public half.

    :param pem: the private key (``service-account.key``), never logged.
    """
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as err:
        raise ServiceAccountKeyError(f"not a PEM private key: {type(err).__name__}") from None
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return _spki_sha256(der)


def public_key_fingerprints(pem: bytes) -> list[str]:
    """Hex SHA-256 of the DER SubjectPublicKeyInfo of every public key of a PEM bundle, in order.

    HyperShift writes PKIX DER under the header ``RSA PUBLIC KEY`` (``support/certs/tls.go:
    PublicKeyToPem``), and appends ``old-key.pub`` after the current key during a rotation: each
    block is read as SubjectPublicKeyInfo whatever its header says, PKCS#1 as a fallback.

    :param pem: ``service-account.pub``.
    """
    from cryptography.hazmat.primitives import serialization

    out = []
    for header, body in _PEM_BLOCK.findall(pem):
        try:
            der = base64.b64decode(b"".join(body.split()), validate=True)
        except ValueError:
            raise ServiceAccountKeyError(f"a {header.decode()} block is not base64") from None
        try:
            key = serialization.load_der_public_key(der)
        except ValueError:
            try:
                key = serialization.load_pem_public_key(
                    b"-----BEGIN RSA PUBLIC KEY-----\n" + body + b"\n-----END RSA PUBLIC KEY-----\n"
                )
            except ValueError:
                raise ServiceAccountKeyError(f"a {header.decode()} block is not a public key") from None
        out.append(
            _spki_sha256(
                key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
            )
        )
    if not out:
        raise ServiceAccountKeyError("no PEM public key found")
    return out
