"""kube-apiserver's ``aescbc`` encryption at rest, as it stores Secrets in etcd.

A value is ``k8s:enc:aescbc:v1:<key name>:`` followed by a 16-byte IV and the AES-256-CBC
ciphertext of the PKCS#7-padded plaintext. The seed writes Secrets this way; a restore's
verification decrypts them with the key saved from ``<hc>-etcd-encryption-key``.
"""

from __future__ import annotations

import os

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

PREFIX = b"k8s:enc:aescbc:v1:"
# The name HyperShift gives the active key in the kube-apiserver EncryptionConfiguration.
ACTIVE_KEY_NAME = "activeKey"
_IV_SIZE = 16


def encrypt(plaintext: bytes, key: bytes, key_name: str = ACTIVE_KEY_NAME) -> bytes:
    """Encrypt ``plaintext`` as kube-apiserver would store it."""
    if len(key) != 32:
        raise ValueError("aescbc keys are 32 bytes (AES-256)")
    iv = os.urandom(_IV_SIZE)
    padder = padding.PKCS7(algorithms.AES.block_size).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return PREFIX + key_name.encode() + b":" + iv + encryptor.update(padded) + encryptor.finalize()


def key_name_of(value: bytes) -> str:
    """The key name in an encrypted value; ``ValueError`` when the value is not aescbc."""
    if not value.startswith(PREFIX):
        raise ValueError("value is not aescbc-encrypted (no k8s:enc:aescbc:v1: prefix)")
    name, sep, _ = value[len(PREFIX) :].partition(b":")
    if not sep:
        raise ValueError("aescbc value has no key name")
    return name.decode()


def decrypt(value: bytes, key: bytes) -> bytes:
    """Decrypt a stored value; raises ``ValueError`` on a wrong key or a damaged value."""
    name = key_name_of(value)
    body = value[len(PREFIX) + len(name) + 1 :]
    if len(body) < 2 * _IV_SIZE or len(body) % _IV_SIZE:
        raise ValueError("aescbc value has a malformed body")
    iv, ciphertext = body[:_IV_SIZE], body[_IV_SIZE:]
    decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    unpadder = padding.PKCS7(algorithms.AES.block_size).unpadder()
    # A wrong key shows up as bad padding.
    return unpadder.update(padded) + unpadder.finalize()
