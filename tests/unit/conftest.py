"""Fixtures shared by the unit tests."""

from __future__ import annotations

import json
from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from hcp_etcd.hooks.snapshot_store import SnapshotStoreHook


@pytest.fixture
def s3hook(monkeypatch: pytest.MonkeyPatch) -> Iterator[SnapshotStoreHook]:
    """A SnapshotStoreHook on moto's in-process S3, with bucket ``bkt``, whose connection asks for
    SigV2 (``signature_version: s3``), so a test can show the hook forces SigV4 anyway."""
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps({"conn_type": "aws", "extra": {
        "region_name": "us-east-2", "config_kwargs": {"signature_version": "s3"}}}))  # fmt: skip
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        boto3.client("s3", region_name="us-east-2").create_bucket(
            Bucket="bkt", CreateBucketConfiguration={"LocationConstraint": "us-east-2"}
        )
        yield SnapshotStoreHook(part_size_mib=5)
