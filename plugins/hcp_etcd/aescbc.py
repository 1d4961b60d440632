"""kube-apiserver's ``aescbc`` encryption-at-rest format, read side only (restore verification).

A stored value is ``k8s:enc:aescbc:v1:<key name>:`` + 16-byte IV + AES-256-CBC ciphertext of the
PKCS#7-padded object. HyperShift names each key ``key-<FNV-1 32 of the key bytes>``
(:func:`kas_key_name`), so a value says which key encrypted it: during a key rotation some Secrets
are under the old key and some under the new one. A restore proves that the restored cluster's keys
open its Secrets by decrypting values read straight from etcd, each with the key it names.
"""

from __future__ import annotations

PREFIX = b"k8s:enc:aescbc:v1:"
KEY_SIZE = 32
_IV_SIZE = 16
# What a decrypted Kubernetes object starts with: protobuf (kube-apiserver's default) or JSON.
_OBJECT_MAGICS = (b"k8s\x00", b"{")
# Go's hash/fnv New32: FNV-1 (multiply, then xor), not FNV-1a.
_FNV32_OFFSET = 0x811C9DC5
_FNV32_PRIME = 0x01000193


class DecryptError(ValueError):
    """A value that is not aescbc, or that the key does not open."""


def kas_key_name(key: bytes) -> str:
    """The name of a key in kube-apiserver's EncryptionConfiguration as HyperShift writes it.

    openshift/hypershift ``control-plane-operator/controllers/hostedcontrolplane/v2/kas/aescbc.go:
    AESCBCKeyName``: ``fmt.Sprintf("key-%d", fnv.New32().Sum32())`` of the raw key bytes. Not secret
    (32 bits of a hash of a 256-bit key), and what :func:`key_name_of` reads from a stored value.

    :param key: the raw key bytes.
    """
    h = _FNV32_OFFSET
    for byte in key:
        h = (h * _FNV32_PRIME) & 0xFFFFFFFF
        h ^= byte
    return f"key-{h}"


def is_aescbc(value: bytes) -> bool:
    """Whether ``value`` carries the aescbc envelope prefix.

    :param value: a raw etcd value.
    """
    return value.startswith(PREFIX)


def key_name_of(value: bytes) -> str:
    """The key name recorded in an encrypted value.

    :param value: a raw etcd value.
    """
    if not is_aescbc(value):
        raise DecryptError("value is not aescbc-encrypted (no k8s:enc:aescbc:v1: prefix)")
    name, sep, _ = value[len(PREFIX) :].partition(b":")
    if not sep:
        raise DecryptError("aescbc value has no key name")
    return name.decode("utf-8", "replace")


def decrypt(value: bytes, key: bytes) -> bytes:
    """Decrypt a stored value; ``DecryptError`` on a wrong key or a damaged value.

    A wrong key shows up as bad PKCS#7 padding (almost always) or as a plaintext that is not a
    Kubernetes object (the rest): both are checked.

    :param value: a raw etcd value.
    :param key: the 32-byte AES key.
    """
    if len(key) != KEY_SIZE:
        raise DecryptError(f"aescbc keys are {KEY_SIZE} bytes, got {len(key)}")
    name = key_name_of(value)
    body = value[len(PREFIX) + len(name.encode()) + 1 :]
    if len(body) < 2 * _IV_SIZE or len(body) % _IV_SIZE:
        raise DecryptError("aescbc value has a malformed body")
    iv, ciphertext = body[:_IV_SIZE], body[_IV_SIZE:]
    # Imported here: DAG files import this module (through the operators) at every parse.
    from cryptography.hazmat.primitives import padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    unpadder = padding.PKCS7(algorithms.AES.block_size).unpadder()
    try:
        plain = unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        raise DecryptError("the key does not decrypt the value (bad padding: wrong key?)") from None
    if not plain.startswith(_OBJECT_MAGICS):
        raise DecryptError("decrypted value is not a Kubernetes object (wrong key?)")
    return plain
