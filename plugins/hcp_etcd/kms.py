"""kube-apiserver's KMS envelope encryption at rest on AWS, read side only (verification).

HyperShift (openshift/hypershift ``main`` 3ee9615567,
``control-plane-operator/controllers/hostedcontrolplane/v2/kas/kms/aws.go``) runs one
aws-encryption-provider per key ARN next to kube-apiserver and names each in the
EncryptionConfiguration ``awskmskey-<FNV-1 32 of the ARN>`` (:func:`provider_name`); a new cluster
gets KMS API ``v2`` (``v2/kas/secretencryption.go: getKMSAPIVersion``), one that started with ``v1``
keeps it. The stored formats, as vendored there from k8s.io/apiserver:

- **v2** (``storage/value/encrypt/envelope/kmsv2/envelope.go``): ``k8s:enc:kms:v2:<provider>:`` + a
  protobuf ``EncryptedObject`` (``kmsv2/v2/api.proto``: 1 ``encryptedData``, 2 ``keyID``, 3
  ``encryptedDEKSource``, 4 ``annotations``, 5 ``encryptedDEKSourceType``). With the default
  ``HKDF_SHA256_XNONCE_AES_GCM_SEED`` source (1) the plaintext of ``encryptedDEKSource`` is a
  32-byte seed shared by many objects, and ``encryptedData`` = 32-byte ``info`` + 12-byte nonce +
  AES-256-GCM ciphertext and tag, the key being the first 32 bytes of HKDF-Expand(SHA-256, seed,
  info) (``encrypt/aes/aes_extended_nonce.go``); with ``AES_GCM_KEY`` (0) the plaintext is the DEK
  itself and ``encryptedData`` = nonce + ciphertext (``encrypt/aes/aes.go``).
- **v1** (``envelope/envelope.go``): ``k8s:enc:kms:v1:<provider>:`` + a 2-byte big-endian length +
  the encrypted DEK (one per object) + the AES-256-GCM (nonce + ciphertext) or, written before
  Kubernetes 1.25, AES-256-CBC (IV + PKCS#7 ciphertext) of the object
  (``server/options/encryptionconfig/config.go: envelopePrefixTransformer``).

The GCM additional data is the object's etcd key (``storage/etcd3/store.go:
authenticatedDataString``). The encrypted DEK (or seed) is what aws-encryption-provider returned
from KMS ``Encrypt`` with a one-byte storage version ``1`` in front
(kubernetes-sigs/aws-encryption-provider ``pkg/plugin/plugin_v2.go``, ``plugin.go``): a reader strips
it and calls KMS ``Decrypt`` on the rest (:func:`kms_ciphertext`). ``keyID`` is the key ARN.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

PREFIX_V1 = b"k8s:enc:kms:v1:"
PREFIX_V2 = b"k8s:enc:kms:v2:"
PROVIDER_NAME_PREFIX = "awskmskey"
# aws-encryption-provider's KMSStorageVersion(V2) ("1"), before every ciphertext it returns.
PLUGIN_STORAGE_VERSION = b"1"
SOURCE_AES_GCM_KEY = 0
SOURCE_HKDF_SEED = 1
_INFO_SIZE = 32
_NONCE_SIZE = 12
_KEY_SIZE = 32
# What a decrypted Kubernetes object starts with: protobuf (kube-apiserver's default) or JSON.
_OBJECT_MAGICS = (b"k8s\x00", b"{")
_FNV32_OFFSET = 0x811C9DC5
_FNV32_PRIME = 0x01000193


class KmsFormatError(ValueError):
    """A value that is not a KMS envelope, or that its DEK does not open."""


def provider_name(arn: str) -> str:
    """The provider name HyperShift gives a key ARN in kube-apiserver's EncryptionConfiguration.

    ``kas/kms/aws.go: AWSKMSProviderName``: ``awskmskey-<fnv.New32() of the ARN>`` (FNV-1, not FNV-1a).

    :param arn: the KMS key ARN.
    """
    h = _FNV32_OFFSET
    for byte in arn.encode():
        h = (h * _FNV32_PRIME) & 0xFFFFFFFF
        h ^= byte
    return f"{PROVIDER_NAME_PREFIX}-{h}"


def is_kms(value: bytes) -> bool:
    """Whether ``value`` carries a KMS envelope prefix (v1 or v2).

    :param value: a raw etcd value.
    """
    return value.startswith((PREFIX_V1, PREFIX_V2))


@dataclass(frozen=True)
class Envelope:
    """A parsed KMS envelope.

    :param version: ``v1`` or ``v2``.
    :param provider: the provider name the value names (``awskmskey-<n>``).
    :param encrypted_dek: what the plugin returned from ``Encrypt`` (storage-version byte included).
    :param data: the encrypted object (see the module docstring for its layout).
    :param key_id: v2: the ``keyID`` the plugin reported (the key ARN); v1: None.
    :param source_type: v2: ``encryptedDEKSourceType``; v1: None.
    :param annotations: v2: the plugin's annotations.
    """

    version: str
    provider: str
    encrypted_dek: bytes
    data: bytes
    key_id: str | None = None
    source_type: int | None = None
    annotations: dict[str, bytes] = field(default_factory=dict)


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise KmsFormatError("KMS v2 EncryptedObject: truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, pos


def _fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """Protocol-buffer wire fields ``(number, value)``: varints and length-delimited only (all a
    ``EncryptedObject`` has)."""
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            out.append((number, value))
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > len(buf):
                raise KmsFormatError("KMS v2 EncryptedObject: truncated field")
            out.append((number, buf[pos : pos + length]))
            pos += length
        else:
            raise KmsFormatError(f"KMS v2 EncryptedObject: unexpected wire type {wire}")
    return out


def parse(value: bytes) -> Envelope:
    """Split a stored KMS value into its parts (nothing is decrypted).

    :param value: a raw etcd value.
    """
    prefix = PREFIX_V2 if value.startswith(PREFIX_V2) else PREFIX_V1 if value.startswith(PREFIX_V1) else None
    if prefix is None:
        raise KmsFormatError("value is not KMS-encrypted (no k8s:enc:kms:v1: or v2: prefix)")
    name, sep, body = value[len(prefix) :].partition(b":")
    if not sep or not name:
        raise KmsFormatError("KMS value has no provider name")
    provider = name.decode("utf-8", "replace")
    if prefix == PREFIX_V1:
        if len(body) < 2:
            raise KmsFormatError("KMS v1 value is too short")
        length = int.from_bytes(body[:2], "big")
        if len(body) < 2 + length or not length:
            raise KmsFormatError("KMS v1 value has a truncated encrypted DEK")
        return Envelope("v1", provider, body[2 : 2 + length], body[2 + length :])
    parts: dict[int, bytes | int] = {}
    annotations: dict[str, bytes] = {}
    for number, item in _fields(body):
        if number == 4 and isinstance(item, bytes):
            entry = dict(_fields(item))
            key, val = entry.get(1, b""), entry.get(2, b"")
            if isinstance(key, bytes) and isinstance(val, bytes):
                annotations[key.decode("utf-8", "replace")] = val
        else:
            parts[number] = item
    data, key_id, dek = parts.get(1), parts.get(2), parts.get(3)
    source = parts.get(5, SOURCE_AES_GCM_KEY)
    if not isinstance(data, bytes) or not data or not isinstance(dek, bytes) or not dek:
        raise KmsFormatError("KMS v2 EncryptedObject lacks encryptedData or encryptedDEKSource")
    if not isinstance(key_id, bytes) or not key_id or not isinstance(source, int):
        raise KmsFormatError("KMS v2 EncryptedObject lacks keyID")
    if source not in (SOURCE_AES_GCM_KEY, SOURCE_HKDF_SEED):
        raise KmsFormatError(f"KMS v2 EncryptedObject has an unknown encryptedDEKSourceType {source}")
    return Envelope("v2", provider, dek, data, key_id.decode("utf-8", "replace"), source, annotations)


def kms_ciphertext(encrypted_dek: bytes) -> bytes:
    """The KMS ``CiphertextBlob`` inside what aws-encryption-provider returned (its version byte off).

    :param encrypted_dek: :attr:`Envelope.encrypted_dek`.
    """
    if not encrypted_dek.startswith(PLUGIN_STORAGE_VERSION) or len(encrypted_dek) < 2:
        raise KmsFormatError(
            "the encrypted DEK does not start with aws-encryption-provider's storage version '1': "
            "not written through AWS KMS"
        )
    return encrypted_dek[1:]


def _hkdf_expand_sha256(prk: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 HKDF-Expand (golang.org/x/crypto/hkdf ``Expand``: the seed is the PRK, no extract)."""
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def _gcm_open(key: bytes, data: bytes, aad: bytes) -> bytes:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    if len(data) < _NONCE_SIZE + 16:
        raise KmsFormatError("KMS value's AES-GCM data is too short")
    try:
        return AESGCM(key).decrypt(data[:_NONCE_SIZE], data[_NONCE_SIZE:], aad)
    except InvalidTag:
        raise KmsFormatError("the DEK does not open the value (AES-GCM tag mismatch)") from None


def _cbc_open(key: bytes, data: bytes) -> bytes:
    from cryptography.hazmat.primitives import padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    if len(data) < 32 or len(data) % 16:
        raise KmsFormatError("KMS v1 value's AES-CBC data is malformed")
    decryptor = Cipher(algorithms.AES(key), modes.CBC(data[:16])).decryptor()
    padded = decryptor.update(data[16:]) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        raise KmsFormatError("the DEK does not open the value (bad padding)") from None


def open_data(envelope: Envelope, dek: bytes, etcd_key: str) -> bytes:
    """Decrypt an envelope's object with the plaintext KMS ``Decrypt`` gave for its DEK (or seed).

    :param envelope: the parsed value.
    :param dek: the plaintext of :attr:`Envelope.encrypted_dek` (a seed for ``HKDF_SHA256`` sources).
    :param etcd_key: the object's etcd key (the AES-GCM additional data).
    """
    aad = etcd_key.encode()
    if envelope.version == "v2" and envelope.source_type == SOURCE_HKDF_SEED:
        if len(dek) < _KEY_SIZE:
            raise KmsFormatError(f"a KMS v2 seed is at least {_KEY_SIZE} bytes, got {len(dek)}")
        info = envelope.data[:_INFO_SIZE]
        plain = _gcm_open(_hkdf_expand_sha256(dek, info, _KEY_SIZE), envelope.data[_INFO_SIZE:], aad)
    elif envelope.version == "v2":
        plain = _gcm_open(dek, envelope.data, aad)
    else:
        try:
            plain = _gcm_open(dek, envelope.data, aad)
        except KmsFormatError:
            plain = _cbc_open(dek, envelope.data)  # written by kube-apiserver before 1.25
    if not plain.startswith(_OBJECT_MAGICS):
        raise KmsFormatError("decrypted value is not a Kubernetes object (wrong DEK?)")
    return plain
