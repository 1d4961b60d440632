"""tests.support.library_caches: the same results, computed once."""

from __future__ import annotations

import boto3
import jsonschema
import pytest

from tests.support import library_caches


def test_sessions_share_what_botocore_parsed_and_keep_their_own_loader():
    library_caches.install()
    library_caches.install()  # idempotent: one patch
    first, second = (
        boto3.session.Session(aws_access_key_id="a", aws_secret_access_key="b", region_name=region)
        for region in ("us-east-1", "eu-west-1")
    )
    a = first.client("s3", endpoint_url="http://127.0.0.1:9")
    b = second.client("s3", endpoint_url="http://127.0.0.1:9")
    loaders = [s._session.get_component("data_loader") for s in (first, second)]
    assert loaders[0] is not loaders[1] and loaders[0]._cache is loaders[1]._cache
    assert a.meta.service_model is not b.meta.service_model  # each client builds its own model
    assert a.meta.service_model.operation_names == b.meta.service_model.operation_names
    assert (a.meta.region_name, b.meta.region_name) == ("us-east-1", "eu-west-1")


def test_a_schema_check_is_remembered_only_once_passed():
    library_caches.install()
    schema = {"$schema": "http://json-schema.org/draft-07/schema#", "type": "string", "maxLength": 3}
    for _ in range(2):
        jsonschema.validate("abc", schema)
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate("abcd", schema)  # values are still validated, every time
    for _ in range(2):  # a schema that failed its check fails it again
        with pytest.raises(jsonschema.SchemaError):
            jsonschema.validate("abc", {"type": "text"})
