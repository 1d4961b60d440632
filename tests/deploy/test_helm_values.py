"""``include/deploy/``: Helm values of the official Apache Airflow chart, checked statically.

The chart is not available offline, so the keys are checked against the chart's values as this
project knows them (``CHART_KEYS`` below, from the chart's ``values.yaml``, releases 1.16+ for
Airflow 3), not against the chart itself. With ``AIRFLOW_CHART_SCHEMA`` pointing at a chart's
``values.schema.json`` the merged values are validated against it as well.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from tests.support.deploy_files import DEPLOY, EXECUTOR_VALUES, REPO, load_values, merged_values

# Keys of the chart's values.yaml that these files may use, as nested sets (None: any value below).
CHART_KEYS: dict[str, Any] = {
    "airflowVersion": None, "defaultAirflowTag": None, "defaultAirflowRepository": None, "executor": None,
    "images": {"airflow": {"repository": None, "tag": None, "digest": None, "pullPolicy": None}},
    "dags": {"persistence": {"enabled": None}, "gitSync": {"enabled": None, "repo": None, "branch": None,
                                                           "subPath": None}},
    "triggerer": {"enabled": None, "replicas": None, "resources": None,
                  "serviceAccount": {"create": None, "name": None, "annotations": None}},
    "dagProcessor": {"enabled": None, "replicas": None, "resources": None,
                     "serviceAccount": {"create": None, "name": None, "annotations": None}},
    "secret": None, "env": None, "extraEnv": None, "extraEnvFrom": None,
    "volumes": None, "volumeMounts": None,
    "config": None, "statsd": {"enabled": None}, "redis": {"enabled": None},
    "postgresql": {"enabled": None}, "data": {"metadataSecretName": None},
    "fernetKeySecretName": None,
    "workers": {"replicas": None, "resources": None, "persistence": {"enabled": None, "size": None},
                "serviceAccount": {"create": None, "name": None, "annotations": None},
                # Also taken by the KubernetesExecutor's pod template (chart/files/pod-template-file).
                "extraInitContainers": None, "extraVolumes": None, "extraVolumeMounts": None},
    "scheduler": {"replicas": None, "serviceAccount": {"create": None, "name": None, "annotations": None}},
    "apiServer": {"replicas": None, "serviceAccount": {"create": None, "name": None, "annotations": None}},
}  # fmt: skip


def unknown_keys(values: dict[str, Any], known: dict[str, Any], path: str = "") -> list[str]:
    bad = []
    for key, value in values.items():
        if key not in known:
            bad.append(f"{path}{key}")
        elif isinstance(known[key], dict) and isinstance(value, dict):
            bad += unknown_keys(value, known[key], f"{path}{key}.")
    return bad


@pytest.fixture(params=sorted(EXECUTOR_VALUES))
def merged(request) -> tuple[str, dict[str, Any]]:
    return request.param, merged_values(request.param)


def test_every_file_is_yaml_with_chart_keys_only():
    for path in sorted(DEPLOY.glob("*.yaml")):
        unknown = unknown_keys(load_values(path.name), CHART_KEYS)
        assert unknown == [], f"{path.name}: keys the chart does not know"


def test_executor_image_and_triggerer(merged):
    executor, values = merged
    assert values["executor"] == executor
    dockerfile = (REPO / "Dockerfile").read_text()
    dockerfile_tag = re.search(r"^FROM apache/airflow:(\S+?)-python", dockerfile, re.M)[1]
    assert values["airflowVersion"] == values["images"]["airflow"]["tag"] == dockerfile_tag
    assert values["images"]["airflow"]["repository"] != "apache/airflow", "our image, not the stock one"
    assert values["triggerer"]["enabled"] is True, "deferrable waits need the triggerer"
    assert values["dagProcessor"]["enabled"] is True
    assert values["redis"]["enabled"] is (executor == "CeleryExecutor")
    if executor == "CeleryExecutor":
        assert values["workers"]["replicas"] >= 1


def test_connections_come_from_secrets_not_values(merged):
    _, values = merged
    secrets = {s["envName"]: s for s in values["secret"]}
    assert {"AIRFLOW_CONN_KUBERNETES_DEFAULT", "AIRFLOW_CONN_AWS_DEFAULT"} <= set(secrets)
    assert all(set(s) == {"envName", "secretName", "secretKey"} for s in secrets.values())
    env = {e["name"]: e["value"] for e in values["env"]}
    assert not any(k.startswith("AIRFLOW_CONN_") for k in env), "connections belong in the Secret"
    assert env["HCP_ETCD_BUCKET"] and "HCP_ETCD_PREFIX" in env
    text = json.dumps(values).lower()
    for needle in ("aws_secret_access_key", "aws_access_key_id", "akia", "password"):
        assert needle not in text, f"{needle!r} in Helm values: credentials go in Secrets or IRSA"


def test_metrics_on(merged):
    _, values = merged
    assert values["config"]["metrics"]["statsd_on"] == "True" and values["statsd"]["enabled"] is True


def test_against_a_real_chart_schema_when_given(merged):
    schema_path = os.environ.get("AIRFLOW_CHART_SCHEMA")
    if not schema_path:
        pytest.skip("AIRFLOW_CHART_SCHEMA not set: the chart is not available offline")
    import jsonschema

    jsonschema.validate(merged[1], json.loads(Path(schema_path).read_text()))
