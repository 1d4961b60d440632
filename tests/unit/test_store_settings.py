"""Unit tests of the S3 settings of a task: validated once into a typed value (params.StoreSettings)."""

from __future__ import annotations

import pytest

from hcp_etcd.errors import ConfigurationError
from hcp_etcd.naming import InvalidNameError
from hcp_etcd.operators.backup import EscrowEncryptionKeyOperator
from hcp_etcd.operators.drill import DrillReportOperator
from hcp_etcd.params import DEFAULT_KEY_PREFIX, StoreSettings


def test_validate_checks_every_setting_and_fills_defaults() -> None:
    store = StoreSettings.validate(bucket="bkt", prefix="hcp-etcd/backups", kms_key_id="")
    assert store == StoreSettings("bkt", "hcp-etcd/backups", "bkt", DEFAULT_KEY_PREFIX, None)
    apart = StoreSettings.validate(
        bucket="bkt", prefix="", key_bucket="keys-bkt", key_prefix="k", kms_key_id="alias/x"
    )
    assert (apart.key_bucket, apart.key_prefix, apart.kms_key_id, apart.prefix) == (
        "keys-bkt",
        "k",
        "alias/x",
        "",
    )
    with pytest.raises(ConfigurationError, match="no bucket given: set the bucket Param or HCP_ETCD_BUCKET"):
        StoreSettings.validate(bucket="", prefix="p")
    with pytest.raises(ConfigurationError, match="not a valid S3 bucket name"):
        StoreSettings.validate(bucket="Not_A_Bucket", prefix="p")
    with pytest.raises(ConfigurationError, match="not a valid S3 bucket name"):
        StoreSettings.validate(bucket="bkt", prefix="p", key_bucket="Bad_Keys")
    for bad in ("a/../b", "a//b"):
        with pytest.raises(InvalidNameError):
            StoreSettings.validate(bucket="bkt", prefix=bad)
        with pytest.raises(InvalidNameError):
            StoreSettings.validate(bucket="bkt", prefix="p", key_prefix=bad)
    with pytest.raises(AttributeError):
        store.bucket = "other"  # type: ignore[misc]  # frozen


def test_an_operator_validates_its_settings_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = StoreSettings.validate.__func__  # type: ignore[attr-defined]

    def counting(cls: type[StoreSettings], **kwargs: object) -> StoreSettings:
        calls.append(kwargs)
        return real(cls, **kwargs)

    monkeypatch.setattr(StoreSettings, "validate", classmethod(counting))
    op = EscrowEncryptionKeyOperator(
        task_id="escrow", hosted_cluster="clusters/a", bucket="bkt", key_bucket="keys-bkt", key_prefix="k",
        kms_key_id="alias/x",
    )  # fmt: skip
    assert (op.store.bucket, op.store.key_bucket, op.store.key_prefix, op.kms) == (
        "bkt",
        "keys-bkt",
        "k",
        "alias/x",
    )
    assert op.store is op.store
    assert len(calls) == 1
    # An operator that takes no escrow settings gets the defaults: the backup bucket, the default prefix.
    report = DrillReportOperator(
        task_id="report", hosted_cluster="clusters/a", bucket="bkt", steps={}, created=None
    )
    assert (report.store.key_bucket, report.store.key_prefix, report.kms) == ("bkt", DEFAULT_KEY_PREFIX, None)


def test_a_bad_setting_fails_the_first_use_with_what_to_set() -> None:
    op = DrillReportOperator(task_id="report", hosted_cluster="clusters/a", bucket="", steps={}, created=None)
    with pytest.raises(ConfigurationError, match="no bucket given"):
        _ = op.store
