"""KeyManagementHook: AWS KMS ``Decrypt`` of the DEKs kube-apiserver wraps with a cluster's KMS key."""

from __future__ import annotations

from typing import Any

from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
from botocore.exceptions import ClientError


class KmsDecryptError(RuntimeError):
    """KMS refused to decrypt (permissions, a disabled or deleted key, a foreign ciphertext)."""


class KeyManagementHook(AwsBaseHook):
    """The provider's AWS hook with a KMS client (``client_type="kms"``), for the verification of
    ``type: kms`` clusters: a Secret read from etcd decrypts when KMS opens its DEK.

    Needs ``kms:Decrypt`` on the cluster's key ARNs for the connection's identity (the key policy must
    allow it too). The plaintext DEK never leaves the calling task.

    :param aws_conn_id: the AWS connection (``aws_default``).
    """

    def __init__(self, aws_conn_id: str | None = AwsBaseHook.default_conn_name, **kwargs: Any) -> None:
        """Create the hook.

        :param aws_conn_id: the AWS connection id.
        :param kwargs: passed to ``AwsBaseHook``.
        """
        kwargs.setdefault("client_type", "kms")
        super().__init__(aws_conn_id=aws_conn_id, **kwargs)

    def decrypt(self, ciphertext: bytes, region_name: str | None = None) -> tuple[bytes, str]:
        """KMS ``Decrypt`` of a symmetric ciphertext (it names its key); ``(plaintext, key ARN)``.

        :param ciphertext: the ``CiphertextBlob``.
        :param region_name: the key's region, when it is not the connection's.
        """
        client = self.conn if not region_name else self.get_client_type(region_name=region_name)
        try:
            answer = client.decrypt(CiphertextBlob=ciphertext)
        except ClientError as err:
            error = err.response.get("Error", {})
            raise KmsDecryptError(
                f"KMS Decrypt refused: {error.get('Code')} {error.get('Message', '')[:200]}"
            ) from None
        return answer["Plaintext"], str(answer.get("KeyId") or "")
