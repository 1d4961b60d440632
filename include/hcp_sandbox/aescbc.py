"""kube-apiserver's ``aescbc`` encryption at rest, as it stores Secrets in etcd.

A value is ``k8s:enc:aescbc:v1:<key name>:`` followed by a 16-byte IV and the AES-256-CBC
ciphertext of the PKCS#7-padded plaintext. The seed writes Secrets this way. Only the writing side
lives here: reading is the product's job (``hcp_etcd.aescbc``, used by a restore's verification),
and the sandbox's tests decrypt with it, so the two sides are checked against each other.
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
