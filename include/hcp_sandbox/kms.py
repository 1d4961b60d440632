"""kube-apiserver's KMS v2 envelope encryption with AWS KMS, as it stores Secrets in etcd.

What a HyperShift hosted cluster with ``spec.secretEncryption.type: kms`` (AWS) writes, read from
openshift/hypershift ``main`` 3ee9615567:

- ``control-plane-operator/controllers/hostedcontrolplane/v2/kas/kms/aws.go``: one
  aws-encryption-provider per key ARN, named ``awskmskey-<FNV-1 32 of the ARN>`` in the
  EncryptionConfiguration (``AWSKMSProviderName``); ``v2/kas/secretencryption.go:
  getKMSAPIVersion``: API ``v2`` for a new cluster.
- the vendored k8s.io/apiserver: ``storage/value/encrypt/envelope/kmsv2/envelope.go``
  (``GenerateTransformer``: one random 32-byte seed per kube-apiserver, wrapped once by the plugin's
  ``Encrypt``; ``TransformToStorage``: a protobuf ``EncryptedObject``, ``kmsv2/v2/api.proto``),
  ``encrypt/aes/aes_extended_nonce.go`` (per write: 32 random bytes of ``info``, the DEK =
  HKDF-Expand(SHA-256, seed, info)[:32], stored ``info`` + the AES-GCM output),
  ``encrypt/aes/aes.go`` (AES-GCM: 12-byte random nonce + ciphertext + tag), the additional data
  being the etcd key (``storage/etcd3/store.go: authenticatedDataString``), and the prefix
  ``k8s:enc:kms:v2:<provider>:`` (``server/options/encryptionconfig/config.go``).
- kubernetes-sigs/aws-encryption-provider ``pkg/plugin/plugin_v2.go`` (6d4f71e964): ``Encrypt`` is
  KMS ``Encrypt`` with the configured key ARN (HyperShift sets no encryption context), its answer
  ``"1"`` + ``CiphertextBlob``; ``keyID`` is the ARN.

The KMS itself is moto's, on the sandbox's S3 endpoint (moto serves every service there). The
product reads this with its own code (``hcp_etcd.kms``); the tests decrypt with :func:`decrypt`.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PREFIX = b"k8s:enc:kms:v2:"
PLUGIN_STORAGE_VERSION = b"1"
HKDF_SHA256_XNONCE_AES_GCM_SEED = 1
_FNV32_OFFSET = 0x811C9DC5
_FNV32_PRIME = 0x01000193


def provider_name(arn: str) -> str:
    """``awskmskey-<fnv.New32() of the ARN>`` (``kas/kms/aws.go: AWSKMSProviderName``)."""
    h = _FNV32_OFFSET
    for byte in arn.encode():
        h = (h * _FNV32_PRIME) & 0xFFFFFFFF
        h ^= byte
    return f"awskmskey-{h}"


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _expand(seed: bytes, info: bytes) -> bytes:
    """HKDF-Expand with SHA-256, 32 bytes (golang.org/x/crypto/hkdf ``Expand``: no extract step)."""
    return hmac.new(seed, info + b"\x01", hashlib.sha256).digest()


@dataclass(frozen=True)
class Envelope:
    """One kube-apiserver's KMS v2 state: its seed and what the plugin made of it.

    :param arn: the key ARN (the provider's ``--key``; the objects' ``keyID``).
    :param seed: the 32-byte DEK seed (plaintext: never leaves the sandbox's process).
    :param encrypted_seed: the plugin's ``Encrypt`` answer (``"1"`` + KMS ``CiphertextBlob``).
    """

    arn: str
    seed: bytes
    encrypted_seed: bytes

    def encrypt(self, etcd_key: str, plaintext: bytes) -> bytes:
        """The stored value of an object at ``etcd_key``, as kube-apiserver writes it.

        :param etcd_key: e.g. ``/kubernetes.io/secrets/ns/name`` (the AES-GCM additional data).
        :param plaintext: the serialised object.
        """
        info, nonce = os.urandom(32), os.urandom(12)
        data = info + nonce + AESGCM(_expand(self.seed, info)).encrypt(nonce, plaintext, etcd_key.encode())
        obj = (
            _field(1, data)
            + _field(2, self.arn.encode())
            + _field(3, self.encrypted_seed)
            + _varint(5 << 3 | 0)
            + _varint(HKDF_SHA256_XNONCE_AES_GCM_SEED)
        )
        return PREFIX + provider_name(self.arn).encode() + b":" + obj


def new_envelope(arn: str, kms_encrypt: Callable[[str, bytes], bytes]) -> Envelope:
    """A kube-apiserver's fresh seed, wrapped through the plugin (``GenerateTransformer``).

    :param arn: the key ARN.
    :param kms_encrypt: KMS ``Encrypt(KeyId=arn, Plaintext)`` -> ``CiphertextBlob``.
    """
    seed = os.urandom(32)
    return Envelope(arn, seed, PLUGIN_STORAGE_VERSION + kms_encrypt(arn, seed))


def _parse(buf: bytes) -> dict[int, Any]:
    fields: dict[int, Any] = {}
    pos = 0

    def varint() -> int:
        nonlocal pos
        result = shift = 0
        while True:
            byte = buf[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return result

    while pos < len(buf):
        tag = varint()
        if tag & 7 == 0:
            fields[tag >> 3] = varint()
        else:
            length = varint()
            fields[tag >> 3] = buf[pos : pos + length]
            pos += length
    return fields


def decrypt(value: bytes, etcd_key: str, kms_decrypt: Callable[[bytes], bytes]) -> bytes:
    """What kube-apiserver reads back from a stored value; ``ValueError`` when it cannot.

    :param value: a raw etcd value.
    :param etcd_key: its key.
    :param kms_decrypt: KMS ``Decrypt(CiphertextBlob)`` -> plaintext.
    """
    if not value.startswith(PREFIX):
        raise ValueError("not a KMS v2 value")
    _, _, body = value[len(PREFIX) :].partition(b":")
    fields = _parse(body)
    wrapped = fields[3]
    if not wrapped.startswith(PLUGIN_STORAGE_VERSION):
        raise ValueError("the encrypted seed lacks aws-encryption-provider's storage version")
    seed = kms_decrypt(wrapped[1:])
    data = fields[1]
    info, nonce = data[:32], data[32:44]
    return AESGCM(_expand(seed, info)).decrypt(nonce, data[44:], etcd_key.encode())


class LocalKms:
    """The sandbox's KMS: moto, reached through the S3 endpoint (moto dispatches on the request's
    signing scope and ``X-Amz-Target``), with the sandbox's credentials.

    :param endpoint: the sandbox's S3/moto URL.
    :param ca: the sandbox CA.
    :param region: the region.
    :param access_key: what moto accepts.
    :param secret_key: ″.
    """

    def __init__(self, endpoint: str, ca: Path, region: str, access_key: str, secret_key: str) -> None:
        import boto3

        self.client = boto3.client(
            "kms",
            endpoint_url=endpoint,
            region_name=region,
            verify=str(ca),
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
        )

    def create_key(self, description: str) -> str:
        """A symmetric key (``SYMMETRIC_DEFAULT``, ``ENCRYPT_DECRYPT``); its ARN."""
        return str(self.client.create_key(Description=description)["KeyMetadata"]["Arn"])

    def encrypt(self, arn: str, plaintext: bytes) -> bytes:
        """KMS ``Encrypt`` with the key ARN."""
        return bytes(self.client.encrypt(KeyId=arn, Plaintext=plaintext)["CiphertextBlob"])

    def decrypt(self, blob: bytes) -> bytes:
        """KMS ``Decrypt`` (the blob names its key)."""
        return bytes(self.client.decrypt(CiphertextBlob=blob)["Plaintext"])
