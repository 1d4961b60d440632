"""The Helm values give the workers and the triggerer the settings docker-compose.yaml gives them.

The production-shaped tier starts the Airflow components with the environment ``docker-compose.yaml``
gives its services (:func:`~tests.support.deploy_files.compose_service_env`). These tests hold the
Helm values of ``include/deploy/`` to the same settings, for the pods that run the project's code:

| values file | the tasks run in (container) | compared with compose's |
|---|---|---|
| ``values-celery-executor.yaml`` | the Celery worker Deployment (``worker``) | ``airflow-worker`` |
| ``values-kubernetes-executor.yaml`` | a task's pod, of the pod template (``base``) | ``airflow-worker`` |
| both | the triggerer (``triggerer``) | ``airflow-triggerer`` |

What a side gives is what its processes read. Compose: the image's environment, the README's example
``airflow.env`` (the service's ``env_file``), then the service's ``environment`` interpolated from an
empty shell (the defaults it writes). Helm: the image's environment, the airflow.cfg of the chart's
ConfigMap (``config`` over the chart's defaults), then the container's ``env``, computed from the
merged values as the official chart renders them (:func:`~tests.support.deploy_files.chart_container_env`,
after the chart's templates). A setting neither sets is Airflow's default (the pinned release's
config.yml), or, for ``HCP_ETCD_*``, the code's (``CODE_DEFAULTS``).

Compared: every variable either side's own files set for that component (compose's ``environment``
and ``airflow.env``; the values' ``env``, ``secret``, ``extraEnv``, ``<component>.env`` and
``config``), and always the DAG and plugins folders, ``AIRFLOW_HOME``, examples, paused-at-creation,
the executor. They must agree (booleans and numbers as Airflow and the code parse them), except the
differences ``INHERENT`` lists, each with its reason; a listed difference that no longer differs
fails too, so the table stays true. ``MUST_AGREE`` (the project's ``HCP_ETCD_*`` settings,
``PYTHONPATH``, the folders, examples, pausing, and the Celery executor) can never be listed. The
chart's own plumbing that no project file sets (its JWT and API Secrets, ``AIRFLOW_CONN_AIRFLOW_DB``)
is not compared.

With the chart at hand (``helm`` on PATH and ``HCP_ETCD_AIRFLOW_CHART`` the path of the official
chart's ``airflow-<version>.tgz``, published at https://downloads.apache.org/airflow/helm-chart/),
``helm template`` renders the values files and the rendered containers and airflow.cfg are held to
the same expectation, and to the computed environment for every entry of the project's values;
without them that test is skipped, saying which is missing.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from hcp_etcd import params, status
from tests.support.deploy_files import (
    REPO,
    airflow_default,
    airflow_settings,
    chart_airflow_cfg,
    chart_container_env,
    chart_extra_env,
    chart_values,
    compose_env_file,
    compose_mounts,
    compose_service_env,
    container_env,
    dockerfile_copies,
    helm_template,
    image_env,
    load_compose,
    merged_values,
    readme_airflow_env,
    rendered_airflow_cfg,
    rendered_container_env,
)

# (executor, chart component, compose service): the pods that run the project's code.
CASES = [
    ("CeleryExecutor", "worker", "airflow-worker"),
    ("CeleryExecutor", "triggerer", "airflow-triggerer"),
    ("KubernetesExecutor", "pod-template", "airflow-worker"),
    ("KubernetesExecutor", "triggerer", "airflow-triggerer"),
]
# What the code reads when an HCP_ETCD_* variable is unset (the constants it reads them with).
CODE_DEFAULTS: dict[str, str] = {
    **dict([params.BACKUP_SCHEDULE, params.ONLINE_SCHEDULE, params.DRILL_SCHEDULE]),
    "HCP_ETCD_PREFIX": params.DEFAULT_PREFIX,
    status.STALE_HOURS_ENV: str(status.DEFAULT_STALE_HOURS),
    # Unset or empty, alike: no bucket (the first task says so), no replica, the run's aws_conn_id.
    params.BUCKET_ENV: "",
    params.REPLICA_BUCKET_ENV: "",
    params.REPLICA_AWS_CONN_ID_ENV: "",
    "HCP_ETCD_PRESIGN_AWS_CONN_ID": "",
}
FOLDERS = {"dags": "AIRFLOW__CORE__DAGS_FOLDER", "plugins": "AIRFLOW__CORE__PLUGINS_FOLDER"}
# Compared whatever the files say; never an inherent difference (HCP_ETCD_* too, see below).
ALWAYS_COMPARED = {
    *FOLDERS.values(), "AIRFLOW_HOME", "PYTHONPATH", "AIRFLOW__CORE__LOAD_EXAMPLES",
    "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION", "AIRFLOW__CORE__EXECUTOR",
}  # fmt: skip
MUST_AGREE = {
    "CeleryExecutor": ALWAYS_COMPARED,
    "KubernetesExecutor": ALWAYS_COMPARED - {"AIRFLOW__CORE__EXECUTOR"},
}
_CONNECTION = "a connection: JSON in airflow.env (the README's example); from the Secret hcp-etcd-connections"
# Settings compose and the chart give differently by design: name -> why.
INHERENT_BOTH = {
    "AIRFLOW_CONFIG": (
        "compose's containers share one airflow.cfg (./config, written by airflow-init) for the secrets "
        "Airflow generates; the chart renders one airflow.cfg ConfigMap for every pod and gives the "
        "secrets from its own Secrets"
    ),
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": (
        "the metadata DB: compose's postgres service by name; the chart's metadata Secret"
    ),
    "AIRFLOW__CORE__FERNET_KEY": (
        "compose takes it from the shell (empty when unset, as the official compose file); the chart "
        "from its fernet-key Secret"
    ),
    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": (
        "compose names its airflow-apiserver service; the chart's pods reach the chart's own api-server "
        "Service, which the chart configures"
    ),
    "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": (
        "compose's common environment, given to every service for the scheduler's healthcheck "
        "(curl :8974/health); the chart probes with `airflow jobs check`"
    ),
    "AIRFLOW__METRICS__STATSD_ON": (
        "the chart runs the statsd-exporter that the DAGs' metrics go to; compose runs no StatsD"
    ),
    "AIRFLOW_CONN_KUBERNETES_DEFAULT": _CONNECTION,
    "AIRFLOW_CONN_AWS_DEFAULT": _CONNECTION,
    "AIRFLOW_CONN_HCP_ETCD_PRESIGN": _CONNECTION,
}
INHERENT = {
    "CeleryExecutor": {
        **INHERENT_BOTH,
        "AIRFLOW__CELERY__BROKER_URL": (
            "compose's redis service by name; the chart's broker-url Secret, for the chart's Redis"
        ),
        "AIRFLOW__CELERY__RESULT_BACKEND": (
            "compose names its postgres; the chart sets none without a result-backend Secret, and "
            "Airflow then uses sql_alchemy_conn (with db+): the metadata DB either way"
        ),
    },
    "KubernetesExecutor": {
        **INHERENT_BOTH,
        "AIRFLOW__CORE__EXECUTOR": "the values file's choice: a pod per task; compose has Celery workers",
        "AIRFLOW__CELERY__BROKER_URL": "no Celery with the KubernetesExecutor: no broker",
        "AIRFLOW__CELERY__RESULT_BACKEND": "no Celery with the KubernetesExecutor: no result backend",
        "DUMB_INIT_SETSID": "the Celery worker's warm shutdown; a task pod is no Celery worker",
        # Queued, for this executor, is a task pod not yet running: a new node and an image pull
        # can take minutes. Airflow's default (600 s) stays.
        "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "a task pod may wait minutes for a node and its "
        "image; compose's 180 s is for a dead Celery worker's taken tasks",
        "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT_CHECK_INTERVAL": "with the timeout above",
    },
}


def compose_settings(service_name: str) -> dict[str, Any]:
    """What a process of a compose service reads (it has no airflow.cfg: Airflow's defaults)."""
    service = load_compose()["services"][service_name]
    assert compose_env_file(service) == "./airflow.env"
    return airflow_settings({**image_env(), **compose_service_env(service, readme_airflow_env(), shell={})})


def helm_settings(values: dict[str, Any], component: str) -> dict[str, Any]:
    """What a process of a chart component reads, computed from the values."""
    env = container_env(chart_container_env(values, component))
    return airflow_settings({**image_env(), **env}, chart_airflow_cfg(values))


def effective(settings: dict[str, Any], name: str) -> Any:
    """A setting as the process ends up with it: given, else Airflow's or the code's default."""
    if name in settings:
        return settings[name]
    if name.startswith("AIRFLOW__"):
        return airflow_default(name, settings["AIRFLOW_HOME"])
    return CODE_DEFAULTS.get(name)


def parsed(value: Any) -> Any:
    """A value as Airflow's getboolean and the code's float() read it; other text as it is."""
    if not isinstance(value, str):
        return value
    word = value.strip().lower()
    if word in ("true", "t", "false", "f"):
        return word in ("true", "t")
    try:
        return float(word)
    except ValueError:
        return value


def compose_names(service_name: str) -> set[str]:
    service = load_compose()["services"][service_name]
    return set(service.get("environment") or {}) | set(readme_airflow_env())


def values_names(values: dict[str, Any], component: str) -> set[str]:
    """Every variable and airflow.cfg option the project's values set for a component's container."""
    v = chart_values(values)
    own = v["triggerer" if component == "triggerer" else "workers"]["env"]
    names = {e["name"] for e in [*v["env"], *own]} | {s["envName"] for s in v["secret"]}
    names |= {e["name"] for e in chart_extra_env(values)}
    return names | {f"AIRFLOW__{s.upper()}__{k.upper()}" for s, opts in v["config"].items() for k in opts}


def compared_names(values: dict[str, Any], component: str, service: str) -> set[str]:
    """What either side's own files set for the component (every HCP_ETCD_* among them), and the rest."""
    return compose_names(service) | values_names(values, component) | ALWAYS_COMPARED


def disagreements(
    compose: dict[str, Any], helm: dict[str, Any], names: set[str], inherent: dict[str, str]
) -> tuple[list[str], set[str]]:
    """The settings that differ and are not listed, and the listed names that do differ."""

    def shown(settings: dict[str, Any]) -> str:
        return (
            repr(settings[name])
            if name in settings
            else f"nothing (the default: {effective(settings, name)!r})"
        )

    problems, differing = [], set()
    for name in sorted(names):
        if parsed(effective(compose, name)) != parsed(effective(helm, name)):
            differing.add(name)
            if name not in inherent:
                problems.append(f"{name}: compose gives {shown(compose)}, the Helm values {shown(helm)}")
        elif name in inherent:
            problems.append(f"{name}: listed as differing ({inherent[name]}), but both give {shown(compose)}")
    return problems, differing


@pytest.mark.parametrize(("executor", "component", "service"), CASES)
def test_the_values_give_the_settings_compose_gives(executor: str, component: str, service: str) -> None:
    values = merged_values(executor)
    names = compared_names(values, component, service)
    problems, _ = disagreements(compose_settings(service), helm_settings(values, component), names,
                                INHERENT[executor])  # fmt: skip
    assert problems == []


@pytest.mark.parametrize("executor", sorted(INHERENT))
def test_every_listed_difference_is_inherent_and_seen(executor: str) -> None:
    inherent = INHERENT[executor]
    assert not set(inherent) & MUST_AGREE[executor]
    assert not [n for n in inherent if n.startswith("HCP_ETCD_")], "the project's settings must agree"
    assert all(reason.strip() for reason in inherent.values())
    values, seen = merged_values(executor), set()
    for case_executor, component, service in CASES:
        if case_executor == executor:
            names = compared_names(values, component, service)
            seen |= disagreements(
                compose_settings(service), helm_settings(values, component), names, inherent
            )[1]
    assert set(inherent) <= seen, f"listed, but no component differs: {set(inherent) - seen}"


@pytest.mark.parametrize(("executor", "component", "service"), CASES)
def test_the_folders_and_the_path_are_where_the_code_is(executor: str, component: str, service: str) -> None:
    """The DAG and plugins folders and PYTHONPATH name where the image has them (the Helm values run
    the image's copies: no git-sync, no DAG volume) and where compose mounts the checkout over them."""
    values = merged_values(executor)
    assert not values["dags"]["gitSync"]["enabled"] and not values["dags"]["persistence"]["enabled"]
    copies, mounts = dockerfile_copies(), compose_mounts(load_compose()["services"][service])
    sides = {"compose": compose_settings(service), "helm": helm_settings(values, component)}
    for folder, option in FOLDERS.items():
        assert mounts[copies[folder]] == f"./{folder}"
        for side, settings in sides.items():
            assert effective(settings, option) == copies[folder], (side, option)
    assert mounts[copies["include"]] == "./include"
    for side, settings in sides.items():
        assert copies["include"] in settings["PYTHONPATH"].split(":"), side


def test_the_defaults_read_are_those_of_the_image_airflow() -> None:
    """Airflow's defaults come from the installed release: the one the image is built from."""
    image = re.search(r"^FROM apache/airflow:(\S+?)-python", (REPO / "Dockerfile").read_text(), re.M)[1]
    assert importlib.metadata.version("apache-airflow") == image
    assert airflow_default("AIRFLOW__CORE__DAGS_FOLDER", "/home") == "/home/dags"


def test_the_computed_env_follows_the_chart_templates() -> None:
    """The order of chart/templates: a later entry of a name wins (as Kubernetes reads `env`)."""
    values = {
        "executor": "CeleryExecutor", "airflowVersion": "3.3.2",
        "env": [{"name": "X", "value": "env"}, {"name": "AIRFLOW_HOME", "value": "/elsewhere"}],
        "workers": {"env": [{"name": "X", "value": "workers.env"}]},
        "secret": [{"envName": "S", "secretName": "s", "secretKey": "k"}],
        "extraEnv": "- name: R\n  value: '{{ .Release.Name }}'\n",
        "config": {"core": {"load_examples": True}},
    }  # fmt: skip
    worker = container_env(chart_container_env(values, "worker"))
    triggerer = container_env(chart_container_env(values, "triggerer"))
    assert worker["X"] == "workers.env" and triggerer["X"] == "env"
    assert worker["DUMB_INIT_SETSID"] == "0" and "DUMB_INIT_SETSID" not in triggerer
    assert worker["R"] == "hcp-etcd" and worker["S"].source == "secretKeyRef s/k"
    # custom_airflow_environment before standard_airflow_environment: the chart's AIRFLOW_HOME wins...
    assert worker["AIRFLOW_HOME"] == triggerer["AIRFLOW_HOME"] == "/opt/airflow"
    assert "AIRFLOW__CELERY__BROKER_URL" in worker
    kubernetes = {**values, "executor": "KubernetesExecutor"}
    pod = container_env(chart_container_env(kubernetes, "pod-template"))
    # ...and after it in the pod template, where the values' own wins.
    assert pod["AIRFLOW_HOME"] == "/elsewhere" and pod["AIRFLOW__CORE__EXECUTOR"] == "KubernetesExecutor"
    assert pod["AIRFLOW__KUBERNETES_ENVIRONMENT_VARIABLES__X"] == "workers.env"
    assert pod["AIRFLOW__KUBERNETES_SECRETS__S"] == "s=k" and "AIRFLOW__CELERY__BROKER_URL" not in pod
    # An environment variable is read before airflow.cfg.
    settings = airflow_settings({"AIRFLOW__CORE__LOAD_EXAMPLES": "false"}, chart_airflow_cfg(values))
    assert settings["AIRFLOW__CORE__LOAD_EXAMPLES"] == "false"
    assert airflow_settings({}, chart_airflow_cfg(values))["AIRFLOW__CORE__LOAD_EXAMPLES"] == "true"
    with pytest.raises(AssertionError, match="render the chart"):
        chart_container_env({**values, "extraEnv": "- name: T\n  value: '{{ include \"x\" . }}'\n"}, "worker")


# ---- the official chart, rendered --------------------------------------------------------------

CHART_ENV = "HCP_ETCD_AIRFLOW_CHART"


@pytest.fixture(scope="module")
def chart() -> Path:
    missing = []
    if not shutil.which("helm"):
        missing.append("the `helm` binary is not on PATH")
    path = os.environ.get(CHART_ENV)
    if not path:
        missing.append(
            f"{CHART_ENV} is not set (the path of the official Apache Airflow chart's airflow-<version>.tgz, "
            "published at https://downloads.apache.org/airflow/helm-chart/)"
        )
    if missing:
        pytest.skip("cannot render the chart: " + "; ".join(missing))
    assert Path(path).is_file(), f"{CHART_ENV}={path}: no such file"
    return Path(path)


@functools.cache
def rendered(chart: Path, executor: str) -> list[dict[str, Any]]:
    return helm_template(chart, executor)


@pytest.mark.parametrize(("executor", "component", "service"), CASES)
def test_the_rendered_chart_gives_the_settings_compose_gives(
    chart: Path, executor: str, component: str, service: str
) -> None:
    docs, values = rendered(chart, executor), merged_values(executor)
    env = container_env(rendered_container_env(docs, component))
    helm = airflow_settings({**image_env(), **env}, rendered_airflow_cfg(docs))
    # The computed environment, which the static test compares, is the chart's for the values' entries.
    computed = helm_settings(values, component)
    for name in sorted(values_names(values, component)):
        assert parsed(effective(helm, name)) == parsed(effective(computed, name)), name
    names = compared_names(values, component, service)
    problems, _ = disagreements(compose_settings(service), helm, names, INHERENT[executor])
    assert problems == []
