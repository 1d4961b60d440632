"""kube-apiserver's ``aescbc`` encryption at rest, as it stores Secrets in etcd.

A value is ``k8s:enc:aescbc:v1:<key name>:`` followed by a 16-byte IV and the AES-256-CBC
ciphertext of the PKCS#7-padded plaintext. The seed writes Secrets this way, and a key rotation
(:mod:`hcp_sandbox.controllers.reencryption`) rewrites them under the new key, so this module also
decrypts. The product reads the same format with its own code (``hcp_etcd.aescbc``, used by a
restore's verification): the sandbox's tests decrypt with it, so the two sides are checked against
each other.
"""

from __future__ import annotations

import os

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

PREFIX = b"k8s:enc:aescbc:v1:"
_IV_SIZE = 16
# FNV-1 (not FNV-1a), 32 bits, as Go's hash/fnv New32.
_FNV32_OFFSET = 0x811C9DC5
_FNV32_PRIME = 0x01000193


def key_name(key: bytes) -> str:
    """The name HyperShift gives a key in kube-apiserver's EncryptionConfiguration: ``key-<FNV-1 32>``.

    ``control-plane-operator/controllers/hostedcontrolplane/v2/kas/aescbc.go: AESCBCKeyName``
    (``fmt.Sprintf("key-%d", fnv.New32().Sum32())`` of the raw key bytes). kube-apiserver writes
    that name into every value it encrypts, and picks the key to decrypt a value by it.

    :param key: the raw key bytes.
    """
    h = _FNV32_OFFSET
    for byte in key:
        h = (h * _FNV32_PRIME) & 0xFFFFFFFF
        h ^= byte
    return f"key-{h}"


def encrypt(plaintext: bytes, key: bytes) -> bytes:
    """Encrypt ``plaintext`` as kube-apiserver would store it, naming the key as HyperShift does.

    :param plaintext: the serialised object.
    :param key: the 32-byte key.
    """
    if len(key) != 32:
        raise ValueError("aescbc keys are 32 bytes (AES-256)")
    iv = os.urandom(_IV_SIZE)
    padder = padding.PKCS7(algorithms.AES.block_size).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return PREFIX + key_name(key).encode() + b":" + iv + encryptor.update(padded) + encryptor.finalize()


def stored_key_name(value: bytes) -> str | None:
    """The key name a stored value carries, or ``None`` for a value that is not aescbc.

    :param value: a raw etcd value.
    """
    if not value.startswith(PREFIX):
        return None
    name, sep, _ = value[len(PREFIX) :].partition(b":")
    return name.decode() if sep else None


def decrypt(value: bytes, key: bytes) -> bytes:
    """What kube-apiserver reads back from a stored value; ``ValueError`` on a wrong key or name.

    :param value: a raw etcd value.
    :param key: the 32-byte key the value names.
    """
    name = stored_key_name(value)
    if name != key_name(key):
        raise ValueError(f"the value is encrypted with {name}, not with {key_name(key)}")
    body = value[len(PREFIX) + len(name) + 1 :]
    decryptor = Cipher(algorithms.AES(key), modes.CBC(body[:_IV_SIZE])).decryptor()
    padded = decryptor.update(body[_IV_SIZE:]) + decryptor.finalize()
    unpadder = padding.PKCS7(algorithms.AES.block_size).unpadder()
    return unpadder.update(padded) + unpadder.finalize()
