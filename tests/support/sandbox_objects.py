"""What the tests do to a sandbox as its admin: read its S3, render, copy and delete what restores need.

The tests' own clients: the admin kubeconfig (``include/rbac`` restricts only the token Airflow has)
and the S3 credentials of the sandbox's ``aws_default``.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from kubernetes import client, config
from kubernetes.client.rest import ApiException

PREFIX = "hcp-etcd/backups"
KEY_PREFIX = "hcp-etcd/keys"
HS = ("hypershift.openshift.io", "v1beta1")


def s3(box: Any) -> Any:
    conn = json.loads(box.env["AIRFLOW_CONN_AWS_DEFAULT"])
    extra = conn["extra"]
    return boto3.client(
        "s3",
        endpoint_url=extra["endpoint_url"],
        region_name=extra["region_name"],
        verify=extra["verify"],
        aws_access_key_id=conn["login"],
        aws_secret_access_key=conn["password"],
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )


def kube(box: Any) -> tuple[client.CustomObjectsApi, client.CoreV1Api]:
    """The tests' own client (admin: include/rbac restricts only the token Airflow has)."""
    api = config.new_client_from_config(str(box.admin_kubeconfig))
    return client.CustomObjectsApi(api), client.CoreV1Api(api)


def hc_exists(box: Any, ns: str, name: str) -> bool:
    co, _ = kube(box)
    try:
        co.get_namespaced_custom_object(*HS, ns, "hostedclusters", name)
    except ApiException as err:
        if err.status == 404:
            return False
        raise
    return True


def delete_cluster(box: Any, ns: str, name: str) -> None:
    """Delete a restored cluster and what the restore made (HC, NodePools, its Secrets); wait until gone."""
    co, core = kube(box)
    for plural in ("hostedclusters", "nodepools"):
        for item in co.list_namespaced_custom_object(*HS, ns, plural)["items"]:
            if item["metadata"]["name"] == name or item.get("spec", {}).get("clusterName") == name:
                co.delete_namespaced_custom_object(*HS, ns, plural, item["metadata"]["name"])
    for secret in core.list_namespaced_secret(ns).items:
        if secret.metadata.name.startswith(f"{name}-"):
            core.delete_namespaced_secret(secret.metadata.name, ns)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        names = [n.metadata.name for n in core.list_namespace().items]
        if f"{ns}-{name}" not in names:
            return
        time.sleep(0.5)
    raise AssertionError(f"control plane of {ns}/{name} still there")


def render(box: Any, path: Path, name: str, members: int) -> Path:
    """``hcp_sandbox render``: manifests of a new cluster ``name``, as ``hcp create cluster --render``."""
    out = box.cli("render", "--dir", str(box.dir), "--name", name, "--members", str(members))
    assert out.returncode == 0, out.stderr
    path.write_text(out.stdout)
    return path


def copy_backup(
    box: Any, manifest: dict[str, Any], ts: str, *, flip_byte: bool = False, key: bytes | None = None
) -> str:
    """Copy a backup into another timestamp directory (optionally corrupting it); returns the manifest URI."""
    c = s3(box)
    ns, name = manifest["hosted_cluster"]["namespace"], manifest["hosted_cluster"]["name"]
    base = f"{PREFIX}/{ns}/{name}/{ts}"
    body = bytearray(c.get_object(Bucket=box.bucket, Key=manifest["snapshot"]["key"])["Body"].read())
    if flip_byte:
        body[len(body) // 2] ^= 0x01
    c.put_object(Bucket=box.bucket, Key=f"{base}/snapshot.db", Body=bytes(body))
    m = json.loads(json.dumps(manifest))
    m["snapshot"]["key"] = f"{base}/snapshot.db"
    m["created_at"] = f"{ts[0:4]}-{ts[4:6]}-{ts[6:8]}T{ts[9:11]}:{ts[11:13]}:{ts[13:15]}Z"
    if key is not None:
        fp = hashlib.sha256(key).hexdigest()
        c.put_object(Bucket=box.bucket, Key=f"{KEY_PREFIX}/{ns}/{name}/{fp}.key", Body=key)
        m["encryption_key"] = {
            "location": f"s3://{box.bucket}/{KEY_PREFIX}/{ns}/{name}/{fp}.key",
            "sha256": fp,
        }
    c.put_object(Bucket=box.bucket, Key=f"{base}/manifest.json", Body=json.dumps(m).encode())
    return f"s3://{box.bucket}/{base}/manifest.json"


def drill_report(box: Any, name: str, day: str) -> dict[str, Any]:
    """The drill report of ``clusters/<name>`` for a day (``YYYYmmdd``)."""
    body = s3(box).get_object(Bucket=box.bucket, Key=f"{PREFIX}/_drills/clusters/{name}/{day}.json")["Body"]
    return dict(json.loads(body.read()))
