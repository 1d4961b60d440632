"""The deployment files agree: RBAC, Helm values, compose file, image and README (parsed, not run).

A component of Airflow that runs this project's code against the management cluster must run as
the ServiceAccount that ``include/rbac`` binds; every path the READMEs point a connection at must
be mounted where that code runs; the ``hcp`` a restore may call must be where the image looks.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from hcp_sandbox.rbac import RbacAuthorizer
from tests.support.deploy_files import (
    DEPLOY,
    EXECUTOR_VALUES,
    REPO,
    compose_mounts,
    dockerfile_path_entries,
    documents_for_subject,
    load_values,
    merged_values,
    rbac_documents,
    rbac_service_account,
    under,
)

# Chart components that run this project's code with kubernetes_default / aws_default: the tasks
# (workers, which is also the KubernetesExecutor's pod template), the waits (triggerer), the
# status page (api-server).
RUNS_OUR_CODE = ("workers", "triggerer", "apiServer")
# Chart components that run none of it: no rights on the management cluster.
RUNS_NONE_OF_IT = ("scheduler", "dagProcessor")
# docker-compose services that run this project's code (the tasks, the waits, the status page,
# and the scheduler and DAG processor that import the DAG files).
COMPOSE_SERVICES = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-worker",
                    "airflow-triggerer")  # fmt: skip

# What the triggers (plugins/hcp_etcd/triggers) ask the Kubernetes API, with a control-plane
# namespace and object names as HyperShift makes them: (verb, plural, namespace, subresource, name).
TRIGGER_REQUESTS = [
    ("get", "hostedclusters", "clusters", None, "prod"),  # HostedClusterAvailable, RestoredCluster
    ("get", "hostedcontrolplanes", "clusters-prod", None, "prod"),  # ReconciliationPaused, RestoredCluster
    ("list", "pods", "clusters-prod", None, None),  # PodsGone, RestoredCluster
    ("get", "pods", "clusters-prod", "log", "etcd-0"),  # RestoredCluster: a failing etcd-init's log
    ("get", "deployments", "clusters-prod", None, "kube-apiserver"),  # DeploymentsReady
    ("get", "namespaces", "", None, "clusters-prod"),  # HostedClusterDeleted: the namespace is gone
]


@pytest.fixture(params=sorted(EXECUTOR_VALUES))
def values(request) -> dict[str, Any]:
    return merged_values(request.param)


def service_account_of(values: dict[str, Any], component: str) -> str | None:
    """The ServiceAccount name the chart gives ``component``'s pods when it does not create one."""
    account = (values.get(component) or {}).get("serviceAccount") or {}
    return None if account.get("create", True) else account.get("name")


def authorizer_for(values: dict[str, Any], component: str) -> RbacAuthorizer:
    namespace, _ = rbac_service_account()
    name = service_account_of(values, component)
    assert name, f"{component}: the chart would create and name its own ServiceAccount"
    docs = documents_for_subject(namespace, name)
    assert docs, f"{component} runs as {namespace}/{name}, which no binding of include/rbac names"
    return RbacAuthorizer(docs)


def test_components_that_run_our_code_run_as_the_bound_service_account(values: dict[str, Any]) -> None:
    _, name = rbac_service_account()
    for component in RUNS_OUR_CODE:
        assert service_account_of(values, component) == name, component
    for component in RUNS_NONE_OF_IT:
        assert service_account_of(values, component) != name, f"{component}: no management-cluster rights"


def test_every_binding_names_the_service_account_of_include_rbac() -> None:
    namespace, name = rbac_service_account()
    bindings = [d for d in rbac_documents() if d["kind"] in ("ClusterRoleBinding", "RoleBinding")]
    assert bindings
    for binding in bindings:
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": name, "namespace": namespace}], (
            binding["metadata"]["name"]
        )


def test_the_service_account_lives_where_the_chart_is_installed() -> None:
    namespace, _ = rbac_service_account()
    readme = (DEPLOY / "README.md").read_text()
    installs = re.findall(r"helm install \S+ \S+ -n (\S+)", readme)
    secrets = re.findall(r"kubectl -n (\S+) create secret", readme)
    assert installs and secrets
    assert set(installs) == set(secrets) == {namespace}


def test_the_triggerer_has_the_rights_of_the_workers(values: dict[str, Any]) -> None:
    workers, triggerer = authorizer_for(values, "workers"), authorizer_for(values, "triggerer")
    assert set(triggerer.rules) == set(workers.rules)
    for request in TRIGGER_REQUESTS:
        assert triggerer(*request), f"the triggerer may not {request}"


def test_the_workers_and_the_status_page_have_what_they_call(values: dict[str, Any]) -> None:
    workers = authorizer_for(values, "workers")
    # A backup's writes and a restore's create, in a HostedCluster namespace of include/rbac.
    assert workers("patch", "hostedclusters", "clusters", None, "prod")
    assert workers("create", "pods", "clusters-prod", "exec", "etcd-0")
    assert workers("patch", "deployments", "clusters-prod", "scale", "kube-apiserver")
    assert workers("create", "hostedclusters", "clusters", None, "prod")
    # The status page lists the fleet.
    assert authorizer_for(values, "apiServer")("list", "hostedclusters", "", None)


def test_every_path_the_readmes_name_is_mounted_in_compose() -> None:
    text = "".join((REPO / name).read_text() for name in ("README.md", "include/deploy/README.md"))
    named = set(re.findall(r"(/opt/airflow/secrets/[\w.-]+|/opt/hcp-etcd/bin\b)", text))
    assert "/opt/airflow/secrets/kubeconfig" in named
    compose = yaml.safe_load((REPO / "docker-compose.yaml").read_text())
    for service in COMPOSE_SERVICES:
        mounts = compose_mounts(compose["services"][service])
        for path in named:
            assert any(under(path, target) for target in mounts), (service, path)


def test_the_kubeconfig_path_is_mounted_by_the_helm_values_that_use_it() -> None:
    """values-kubeconfig.yaml: top-level mounts, which the chart gives every pod and the pod template."""
    readme = (DEPLOY / "README.md").read_text()
    path = re.search(r'"kube_config_path": "([^"]+)"', readme)[1]
    layer = load_values("values-kubeconfig.yaml")
    assert "values-kubeconfig.yaml" in readme
    mounts = {m["name"]: m for m in layer["volumeMounts"]}
    volumes = {v["name"]: v for v in layer["volumes"]}
    (mount,) = (m for m in mounts.values() if under(path, m["mountPath"]))
    assert mount["readOnly"] is True
    secret = volumes[mount["name"]]["secret"]["secretName"]
    assert f"create secret generic {secret}" in readme, "the README creates the Secret the values mount"


def test_hcp_is_where_the_image_looks_for_it(values: dict[str, Any]) -> None:
    (bin_dir,) = dockerfile_path_entries()
    # docker compose: a host folder mounted there on the worker (the restore runs on a worker).
    compose = yaml.safe_load((REPO / "docker-compose.yaml").read_text())
    assert bin_dir in compose_mounts(compose["services"]["airflow-worker"])
    # Helm: an init container fills a volume that the worker (and task pod) mounts there.
    workers = values["workers"]
    (mount,) = (m for m in workers["extraVolumeMounts"] if m["mountPath"] == bin_dir)
    assert any(v["name"] == mount["name"] and "emptyDir" in v for v in workers["extraVolumes"])
    (init,) = (c for c in workers["extraInitContainers"] if c["name"] == "hcp-cli")
    (init_mount,) = (m for m in init["volumeMounts"] if m["name"] == mount["name"])
    assert init["command"][-1] == f"{init_mount['mountPath']}/hcp"
    # The restore's error, when hcp is missing, says where to put it.
    restore = (REPO / "plugins" / "hcp_etcd" / "operators" / "restore.py").read_text()
    assert f"Provide it in {bin_dir}" in restore and "./hcp-bin/hcp" in restore
    assert compose_mounts(compose["services"]["airflow-worker"])[bin_dir] == "./hcp-bin"


def test_env_vars_of_the_values_are_read_by_the_code_and_documented(values: dict[str, Any]) -> None:
    code = "".join(p.read_text() for p in (REPO / "plugins").rglob("*.py"))
    docs = (REPO / "README.md").read_text() + (REPO / "docs" / "RUNBOOK.md").read_text()
    env = {e["name"]: e["value"] for e in values["env"]}
    for name in env:
        if name.startswith("HCP_ETCD_"):
            assert f'"{name}"' in code or f"'{name}'" in code, f"{name}: no code reads it"
            assert name in docs, f"{name}: the README does not say what it is"
    # A connection id an env var names has its AIRFLOW_CONN_<ID> from the Secret.
    from_secret = {s["envName"] for s in values["secret"]}
    for name, value in env.items():
        if name.endswith("_CONN_ID"):
            assert f"AIRFLOW_CONN_{value.upper()}" in from_secret, name
    keys = {s["secretKey"] for s in values["secret"]}
    readme = (DEPLOY / "README.md").read_text()
    for key in keys:
        assert f"--from-literal={key}=" in readme or f"`{key}`" in readme, f"the README never creates {key}"
