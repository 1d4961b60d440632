"""The deployment files, parsed as the tools that apply them read them (no Helm, no Docker, no cluster).

``include/deploy/values-*.yaml`` merged as ``helm install -f a -f b`` merges them,
``include/rbac/*.yaml`` as ``kubectl apply -f include/rbac/`` reads them, ``docker-compose.yaml``
and the ``Dockerfile`` as text. The tests of ``tests/deploy`` and ``tests/foundation`` check that
these files agree with one another and with the README.
"""

from __future__ import annotations

import configparser
import copy
import functools
import importlib.util
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "include" / "deploy"
RBAC = REPO / "include" / "rbac"
EXECUTOR_VALUES = {
    "KubernetesExecutor": "values-kubernetes-executor.yaml",
    "CeleryExecutor": "values-celery-executor.yaml",
}


def load_values(name: str) -> dict[str, Any]:
    """One values file of ``include/deploy``.

    :param name: the file's name.
    """
    data = yaml.safe_load((DEPLOY / name).read_text())
    assert isinstance(data, dict), f"{name} is not a YAML mapping"
    return data


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Helm's merge of -f files: maps merge key by key, everything else (lists too) is replaced.

    :param base: the values so far.
    :param over: the next file's values.
    """
    out = copy.deepcopy(base)
    for key, value in over.items():
        both_maps = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = merge(out[key], value) if both_maps else value
    return out


def merged_values(executor: str, *extra: str) -> dict[str, Any]:
    """``values-common.yaml``, then the executor's file, then ``extra`` files, as Helm merges them.

    :param executor: a key of :data:`EXECUTOR_VALUES`.
    :param extra: more files of ``include/deploy`` layered on top.
    """
    values = load_values("values-common.yaml")
    for name in (EXECUTOR_VALUES[executor], *extra):
        values = merge(values, load_values(name))
    return values


def rbac_documents() -> list[dict[str, Any]]:
    """Every object of ``include/rbac/*.yaml``."""
    docs: list[dict[str, Any]] = []
    for path in sorted(RBAC.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def rbac_service_account() -> tuple[str, str]:
    """``(namespace, name)`` of the one ServiceAccount ``include/rbac`` creates."""
    accounts = [d for d in rbac_documents() if d["kind"] == "ServiceAccount"]
    assert len(accounts) == 1, accounts
    meta = accounts[0]["metadata"]
    return meta["namespace"], meta["name"]


def documents_for_subject(namespace: str, name: str) -> list[dict[str, Any]]:
    """The bindings of ``include/rbac`` that name this ServiceAccount, and the roles they bind.

    What a Kubernetes RBAC authorizer grants that account: fed to
    :class:`hcp_sandbox.rbac.RbacAuthorizer`, no other role applies.

    :param namespace: the ServiceAccount's namespace.
    :param name: its name.
    """
    docs = rbac_documents()
    bindings = [
        d
        for d in docs
        if d["kind"] in ("ClusterRoleBinding", "RoleBinding")
        and any(
            s.get("kind") == "ServiceAccount" and s.get("name") == name and s.get("namespace") == namespace
            for s in d.get("subjects") or []
        )
    ]
    refs = {(b["roleRef"]["kind"], b["roleRef"]["name"]) for b in bindings}
    roles = [d for d in docs if (d["kind"], d["metadata"]["name"]) in refs]
    return [*roles, *bindings]


def compose_mounts(service: dict[str, Any]) -> dict[str, str]:
    """``{container path: host path}`` of a compose service's short-syntax volumes.

    :param service: the service as parsed (anchors already resolved by the YAML loader).
    """
    mounts = {}
    for volume in service.get("volumes") or []:
        source, target = volume.split(":")[:2]
        mounts[target] = source
    return mounts


def dockerfile_path_entries() -> list[str]:
    """The directories the image's ``ENV PATH=...`` puts before the base image's PATH."""
    match = re.search(r"^ENV PATH=(\S+)$", (REPO / "Dockerfile").read_text(), re.M)
    assert match, "the Dockerfile sets no PATH"
    return [p for p in match[1].split(":") if p != "${PATH}"]


def under(path: str, mount: str) -> bool:
    """Whether ``path`` is ``mount`` or inside it.

    :param path: an absolute path in the container.
    :param mount: a mount point.
    """
    return path == mount or path.startswith(mount.rstrip("/") + "/")


# ---- docker-compose.yaml as `docker compose up` reads it ----------------------------------------

COMPOSE = REPO / "docker-compose.yaml"
# Compose's interpolation: $$ (a literal $), ${VAR}, ${VAR:-default} (unset or empty), ${VAR-default}
# (unset), $VAR. Written here because no library of ours implements the Compose specification's rules.
_INTERPOLATION = re.compile(r"\$(?:(\$)|\{(\w+)(?:(:?-)([^}]*))?\}|(\w+))")


def load_compose() -> dict[str, Any]:
    """``docker-compose.yaml`` parsed, its anchors and ``<<`` merge keys resolved by the YAML loader."""
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict), "docker-compose.yaml is not a YAML mapping"
    return data


def interpolate(value: str, shell: dict[str, str]) -> str:
    """A value of the compose file as Compose interpolates it from the shell's environment.

    :param value: the text as written.
    :param shell: the environment ``docker compose`` runs in.
    """

    def one(match: re.Match[str]) -> str:
        literal, name, op, default, bare = match.groups()
        if literal:
            return "$"
        if bare:
            return shell.get(bare, "")
        if op == ":-":
            return shell.get(name) or default
        if op == "-":
            return shell.get(name, default)
        return shell.get(name, "")

    return _INTERPOLATION.sub(one, value)


def compose_env_file(service: dict[str, Any]) -> str | None:
    """The ``env_file`` a service reads (the one file the project's compose file names), or None."""
    entries = service.get("env_file") or []
    entries = [entries] if isinstance(entries, str | dict) else entries
    paths = [e["path"] if isinstance(e, dict) else e for e in entries]
    assert len(paths) <= 1, f"more than one env_file: {paths}"
    return paths[0] if paths else None


def compose_service_env(
    service: dict[str, Any], env_file: dict[str, str], shell: dict[str, str]
) -> dict[str, str]:
    """The environment a container of ``service`` starts with: its ``env_file`` values, overridden
    by its ``environment`` (Compose's precedence), each value interpolated from ``shell``.

    :param service: the service as parsed by :func:`load_compose`.
    :param env_file: the variables of the service's ``env_file`` (``airflow.env``).
    :param shell: the environment ``docker compose`` runs in.
    """
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    return {**env_file, **{k: interpolate(str(v), shell) for k, v in environment.items()}}


def compose_command(service: dict[str, Any], shell: dict[str, str]) -> list[str]:
    """A service's command as a list (the string form split as Compose splits it: on spaces).

    :param service: the service as parsed by :func:`load_compose`.
    :param shell: the environment ``docker compose`` runs in.
    """
    command = service.get("command") or []
    parts = command.split() if isinstance(command, str) else list(command)
    return [interpolate(str(p), shell) for p in parts]


def readme_airflow_env() -> dict[str, str]:
    """The ``airflow.env`` the README shows (its example of connections and settings as variables).

    The ``sh`` block of ``NAME=value`` lines that sets ``AIRFLOW_CONN_KUBERNETES_DEFAULT``, each value
    as a shell reads it.
    """
    blocks = re.findall(r"^```sh\n(.*?)^```", (REPO / "README.md").read_text(), re.M | re.S)
    (block,) = (b for b in blocks if re.search(r"^AIRFLOW_CONN_KUBERNETES_DEFAULT=", b, re.M))
    env = {}
    for line in block.splitlines():
        name, _, value = line.partition("=")
        assert re.fullmatch(r"[A-Z_][A-Z0-9_]*", name), f"not a NAME=value line: {line!r}"
        (env[name],) = shlex.split(value)
    return env


def dockerfile_copies() -> dict[str, str]:
    """``{source: destination}`` of the Dockerfile's ``COPY`` lines of one source (folders without '/')."""
    copies = {}
    for line in re.findall(r"^COPY (.+)$", (REPO / "Dockerfile").read_text(), re.M):
        parts = [p for p in line.split() if not p.startswith("--")]
        if len(parts) == 2:
            copies[parts[0].rstrip("/")] = parts[1].rstrip("/")
    return copies


# The official image's own ENV that the settings below depend on (apache/airflow's Dockerfile).
OFFICIAL_IMAGE_ENV = {"AIRFLOW_HOME": "/opt/airflow"}


def image_env() -> dict[str, str]:
    """The environment a container of the project's image starts with before compose or Kubernetes
    add theirs: the official image's ``AIRFLOW_HOME``, then the Dockerfile's ``ENV`` lines (those that
    do not extend a variable of the base image, such as ``PATH``)."""
    env = dict(OFFICIAL_IMAGE_ENV)
    for name, value in re.findall(r"^ENV (\w+)=(\S+)$", (REPO / "Dockerfile").read_text(), re.M):
        if "$" not in value:
            env[name] = value
    return env


# ---- the official Airflow chart's environment of a pod, computed from the values (no Helm) ------
#
# As the official chart renders it (github.com/apache/airflow, chart/, as of its releases for Airflow 3.1:
# chart/values.yaml's airflowVersion 3.1.3):
# chart/templates/_helpers.yaml (standard_airflow_environment, custom_airflow_environment,
# container_extra_envs), the env of the container `worker` of chart/templates/workers/worker-deployment.yaml,
# of `triggerer` of chart/templates/triggerer/triggerer-deployment.yaml and of `base` of
# chart/files/pod-template-file.kubernetes-helm-yaml (each KubernetesExecutor task pod), and
# chart/templates/configmaps/configmap.yaml (`config.<section>.<key>` rendered into airflow.cfg).
# Kerberos, KEDA, Elasticsearch and OpenSearch, which these values leave off, are not modelled.

# The release name and namespace of include/deploy/README.md's `helm install hcp-etcd ... -n hcp-etcd`.
RELEASE = "hcp-etcd"
NAMESPACE = "hcp-etcd"
# Chart component -> the name of its Airflow container.
CHART_CONTAINERS = {"worker": "worker", "triggerer": "triggerer", "pod-template": "base"}
_BUILT_IN_SECRET_ENV = (
    "AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__CORE__SQL_ALCHEMY_CONN", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "AIRFLOW_CONN_AIRFLOW_DB", "AIRFLOW__API__SECRET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET",
    "AIRFLOW__WEBSERVER__SECRET_KEY", "AIRFLOW__CELERY__CELERY_RESULT_BACKEND",
    "AIRFLOW__CELERY__RESULT_BACKEND", "AIRFLOW__CELERY__BROKER_URL",
)  # fmt: skip
# The defaults of chart/values.yaml that the functions below read.
_CHART_DEFAULTS: dict[str, Any] = {
    "airflowVersion": "3.1.3", "airflowHome": "/opt/airflow",
    "useStandardNaming": False, "fullnameOverride": "", "nameOverride": "",
    "executor": "CeleryExecutor", "env": [], "secret": [], "extraEnv": None,
    "enableBuiltInSecretEnvVars": dict.fromkeys(_BUILT_IN_SECRET_ENV, True),
    "fernetKeySecretName": None, "jwtSecretName": None, "apiSecretKeySecretName": None,
    "data": {"metadataSecretName": None, "resultBackendSecretName": None, "resultBackendConnection": None,
             "brokerUrlSecretName": None},
    "dags": {"mountPath": None, "gitSync": {"enabled": False, "subPath": "tests/dags"}},
    "statsd": {"enabled": True}, "workers": {"env": []}, "triggerer": {"env": []}, "config": {},
}  # fmt: skip


@dataclass(frozen=True)
class ValueFrom:
    """An env var whose value Kubernetes takes from elsewhere (a Secret's key), not from the manifests.

    :param source: what it names, e.g. ``secretKeyRef hcp-etcd-connections/aws_default``.
    """

    source: str


def chart_values(values: dict[str, Any]) -> dict[str, Any]:
    """The project's merged values over the chart defaults that :func:`chart_container_env` reads."""
    return merge(_CHART_DEFAULTS, values)


def _fullname(v: dict[str, Any]) -> str:
    if not v["useStandardNaming"]:
        return RELEASE
    if v["fullnameOverride"]:
        return v["fullnameOverride"][:63].rstrip("-")
    name = v["nameOverride"] or "airflow"
    return (RELEASE if name in RELEASE else f"{RELEASE}-{name}")[:63].rstrip("-")


def _at_least(version: str, minimum: str) -> bool:
    def parts(text: str) -> tuple[int, ...]:
        return tuple(int(p) for p in re.findall(r"\d+", text)[:3])

    return parts(version) >= parts(minimum)


def _quote(value: Any) -> str:
    """Helm's ``quote``/``toString`` of a scalar of the values."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _tpl(text: str, v: dict[str, Any]) -> str:
    """Helm's ``tpl`` for what these values may hold: ``.Release.Name``, ``.Release.Namespace`` and
    ``.Values.a.b``; any other action is beyond this model (render the chart for it)."""

    def one(match: re.Match[str]) -> str:
        expr = match[1].strip()
        if expr == ".Release.Name":
            return RELEASE
        if expr == ".Release.Namespace":
            return NAMESPACE
        assert expr.startswith(".Values."), f"template {match[0]!r}: render the chart (helm template) for it"
        node: Any = v
        for key in expr.removeprefix(".Values.").split("."):
            node = node[key]
        return _quote(node)

    return re.sub(r"\{\{-?(.*?)-?\}\}", one, text)


def _secret(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def _standard_env(v: dict[str, Any]) -> list[dict[str, Any]]:
    """``standard_airflow_environment``: the chart's own Secrets, and AIRFLOW_HOME."""
    on, data, full = v["enableBuiltInSecretEnvVars"], v["data"], _fullname(v)
    metadata = data["metadataSecretName"] or f"{full}-metadata"
    env = []
    if on["AIRFLOW__CORE__FERNET_KEY"]:
        env.append(
            _secret(
                "AIRFLOW__CORE__FERNET_KEY", v["fernetKeySecretName"] or f"{full}-fernet-key", "fernet-key"
            )
        )
    env.append({"name": "AIRFLOW_HOME", "value": v["airflowHome"]})
    for name in (
        "AIRFLOW__CORE__SQL_ALCHEMY_CONN",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "AIRFLOW_CONN_AIRFLOW_DB",
    ):
        if on[name]:
            env.append(_secret(name, metadata, "connection"))
    airflow3 = _at_least(v["airflowVersion"], "3.0.0")
    if not airflow3 and on["AIRFLOW__WEBSERVER__SECRET_KEY"]:
        env.append(
            _secret("AIRFLOW__WEBSERVER__SECRET_KEY", f"{full}-webserver-secret-key", "webserver-secret-key")
        )
    if airflow3 and on["AIRFLOW__API__SECRET_KEY"]:
        secret = v["apiSecretKeySecretName"] or f"{full}-api-secret-key"
        env.append(_secret("AIRFLOW__API__SECRET_KEY", secret, "api-secret-key"))
    if airflow3 and on["AIRFLOW__API_AUTH__JWT_SECRET"]:
        env.append(
            _secret("AIRFLOW__API_AUTH__JWT_SECRET", v["jwtSecretName"] or f"{full}-jwt-secret", "jwt-secret")
        )
    if _celery(v):
        if data["resultBackendSecretName"] or data["resultBackendConnection"]:
            backend = data["resultBackendSecretName"] or f"{full}-result-backend"
            for name in ("AIRFLOW__CELERY__CELERY_RESULT_BACKEND", "AIRFLOW__CELERY__RESULT_BACKEND"):
                if on[name]:
                    env.append(_secret(name, backend, "connection"))
        if on["AIRFLOW__CELERY__BROKER_URL"]:
            broker = data["brokerUrlSecretName"] or f"{RELEASE}-broker-url"
            env.append(_secret("AIRFLOW__CELERY__BROKER_URL", broker, "connection"))
    return env


def _celery(v: dict[str, Any]) -> bool:
    return "CeleryExecutor" in v["executor"] or "CeleryKubernetesExecutor" in v["executor"]


def _kubernetes(v: dict[str, Any]) -> bool:
    # The chart's `contains "KubernetesExecutor"` (also true of Local- and CeleryKubernetesExecutor).
    return "KubernetesExecutor" in v["executor"]


def _extra_envs(v: dict[str, Any], entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``container_extra_envs`` (and the ``env`` half of ``custom_airflow_environment``): each entry,
    repeated as ``AIRFLOW__KUBERNETES_ENVIRONMENT_VARIABLES__<name>`` for a Kubernetes executor."""
    env = []
    for entry in entries:
        if entry.get("value"):
            body: dict[str, Any] = {"value": _quote(entry["value"])}
        elif entry.get("valueFrom"):
            body = {"valueFrom": entry["valueFrom"]}
        else:
            body = {"value": ""}
        env.append({"name": entry["name"], **body})
        if _kubernetes(v):
            env.append({"name": f"AIRFLOW__KUBERNETES_ENVIRONMENT_VARIABLES__{entry['name']}", **body})
    return env


def _custom_env(v: dict[str, Any]) -> list[dict[str, Any]]:
    """``custom_airflow_environment``: ``env``, ``secret`` and the templated ``extraEnv``."""
    env = []
    for entry in v["env"]:  # `value: {{ $config.value | quote }}`, whatever the value
        env.append({"name": entry["name"], "value": _quote(entry["value"])})
        if _kubernetes(v):
            env.append({**env[-1], "name": f"AIRFLOW__KUBERNETES_ENVIRONMENT_VARIABLES__{entry['name']}"})
    env += [_secret(s["envName"], s["secretName"], s.get("secretKey") or "value") for s in v["secret"]]
    if _kubernetes(v):
        env += [
            {
                "name": f"AIRFLOW__KUBERNETES_SECRETS__{s['envName']}",
                "value": f"{s['secretName']}={s['secretKey']}",
            }
            for s in v["secret"]
        ]
    return env + chart_extra_env(values=v)


def chart_extra_env(values: dict[str, Any]) -> list[dict[str, Any]]:
    """The entries of ``extraEnv`` (a templated YAML string of a list), as the chart renders them.

    :param values: the project's merged values.
    """
    v = chart_values(values)
    if not v["extraEnv"]:
        return []
    extra = yaml.safe_load(_tpl(v["extraEnv"], v))
    assert isinstance(extra, list), "extraEnv is a YAML list of env entries"
    return extra


def chart_container_env(values: dict[str, Any], component: str) -> list[dict[str, Any]]:
    """The ``env`` of a component's Airflow container, as the chart renders it from ``values``.

    :param values: the project's merged values (:func:`merged_values`).
    :param component: a key of :data:`CHART_CONTAINERS`: ``worker`` (a Celery worker), ``triggerer``,
        or ``pod-template`` (a KubernetesExecutor task pod).
    """
    v = chart_values(values)
    if component == "worker":
        assert _celery(v), "the chart makes no worker Deployment without a Celery executor"
        return [{"name": "DUMB_INIT_SETSID", "value": "0"}, *_custom_env(v), *_standard_env(v),
                *_extra_envs(v, v["workers"]["env"])]  # fmt: skip
    if component == "triggerer":
        return [*_custom_env(v), *_standard_env(v), *_extra_envs(v, v["triggerer"]["env"])]
    assert component == "pod-template", component
    return [{"name": "AIRFLOW__CORE__EXECUTOR", "value": v["executor"]}, *_standard_env(v), *_custom_env(v),
            *_extra_envs(v, v["workers"]["env"])]  # fmt: skip


def _airflow_dags(v: dict[str, Any]) -> str:
    """The chart's ``airflow_dags``: where the DAG folder is in its pods."""
    dags, home = v["dags"], v["airflowHome"]
    git = dags["gitSync"]
    if dags["mountPath"]:
        return f"{dags['mountPath']}/repo/{git['subPath']}" if git["enabled"] else dags["mountPath"]
    return f"{home}/dags/repo/{git['subPath']}" if git["enabled"] else f"{home}/dags"


def chart_airflow_cfg(values: dict[str, Any]) -> dict[str, dict[str, str]]:
    """The airflow.cfg the chart's ConfigMap holds: ``config`` over the chart's default ``config``.

    Of the chart's defaults, the options that bear on the project's settings: the DAG folder, the
    executor, examples, StatsD (the other defaults are the chart's own plumbing and are read, with
    the rest, from the real airflow.cfg when the chart is rendered).

    :param values: the project's merged values.
    """
    v = chart_values(values)
    defaults = {
        "core": {"dags_folder": _airflow_dags(v), "load_examples": "False", "executor": v["executor"]},
        "metrics": {"statsd_on": "True" if v["statsd"]["enabled"] else "False"},
    }
    given = {s: {k: _tpl(_quote(val), v) for k, val in opts.items()} for s, opts in v["config"].items()}
    return merge(defaults, given)


def container_env(entries: list[dict[str, Any]]) -> dict[str, str | ValueFrom]:
    """What a container's ``env`` list sets, as Kubernetes reads it: a later entry of a name wins.

    :param entries: the list, computed (:func:`chart_container_env`) or rendered.
    """
    env: dict[str, str | ValueFrom] = {}
    for entry in entries:
        if "valueFrom" in entry:
            ((kind, ref),) = entry["valueFrom"].items()
            env[entry["name"]] = ValueFrom(f"{kind} {ref.get('name')}/{ref.get('key')}")
        else:
            value = entry.get("value")
            env[entry["name"]] = "" if value is None else str(value)
    return env


def airflow_settings(env: dict[str, Any], cfg: dict[str, dict[str, str]] | None = None) -> dict[str, Any]:
    """What a process reads: ``env``, over airflow.cfg's options as ``AIRFLOW__SECTION__KEY``
    (Airflow takes an environment variable before airflow.cfg).

    :param env: the container's environment (image, then compose or Kubernetes).
    :param cfg: airflow.cfg, ``{section: {key: value}}``.
    """
    from_cfg = {
        f"AIRFLOW__{s.upper()}__{k.upper()}": val
        for s, opts in (cfg or {}).items()
        for k, val in opts.items()
    }
    return {**from_cfg, **env}


@functools.cache
def _airflow_config_template() -> dict[str, Any]:
    spec = importlib.util.find_spec("airflow")
    assert spec and spec.submodule_search_locations
    return yaml.safe_load(
        (Path(spec.submodule_search_locations[0]) / "config_templates" / "config.yml").read_text()
    )


def airflow_default(name: str, airflow_home: str) -> str | None:
    """Airflow's own default of ``AIRFLOW__SECTION__KEY`` (the installed Airflow's config.yml, the
    release the image pins), or None when it has none.

    :param name: the option as an environment variable.
    :param airflow_home: what ``{AIRFLOW_HOME}`` in a default stands for.
    """
    match = re.fullmatch(r"AIRFLOW__([A-Z0-9_]+?)__([A-Z0-9_]+)", name)
    if not match:
        return None
    section = _airflow_config_template().get(match[1].lower()) or {}
    option = (section.get("options") or {}).get(match[2].lower()) or {}
    default = option.get("default")
    return None if default is None else str(default).replace("{AIRFLOW_HOME}", airflow_home)


# ---- the chart rendered by `helm template` ------------------------------------------------------


def helm_template(chart: Path, executor: str) -> list[dict[str, Any]]:
    """The manifests ``helm template`` renders from the official chart's tarball and the values files,
    as include/deploy/README.md installs them (release and namespace ``hcp-etcd``).

    :param chart: the chart's ``airflow-<version>.tgz``.
    :param executor: a key of :data:`EXECUTOR_VALUES`.
    """
    files = ["values-common.yaml", EXECUTOR_VALUES[executor]]
    argv = ["helm", "template", RELEASE, str(chart), "--namespace", NAMESPACE]
    argv += [a for name in files for a in ("-f", str(DEPLOY / name))]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def _config_map(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (config,) = (
        d for d in docs if d["kind"] == "ConfigMap" and "airflow.cfg" in (d.get("data") or {})
        and (d["metadata"].get("labels") or {}).get("component") == "config"
    )  # fmt: skip
    return config


def rendered_container_env(docs: list[dict[str, Any]], component: str) -> list[dict[str, Any]]:
    """The ``env`` list of a component's Airflow container in the rendered manifests.

    :param docs: what :func:`helm_template` returned.
    :param component: a key of :data:`CHART_CONTAINERS`.
    """
    if component == "pod-template":
        pod = yaml.safe_load(_config_map(docs)["data"]["pod_template_file.yaml"])
        spec = pod["spec"]
    else:
        workloads = [
            d["spec"]["template"]["spec"]
            for d in docs
            if d["kind"] in ("Deployment", "StatefulSet")
            and d["spec"]["template"]["metadata"]["labels"].get("component") == component
            and any(
                c["name"] == CHART_CONTAINERS[component] for c in d["spec"]["template"]["spec"]["containers"]
            )
        ]
        assert len(workloads) == 1, f"{len(workloads)} workloads of component {component} in the manifests"
        (spec,) = workloads
    (container,) = (c for c in spec["containers"] if c["name"] == CHART_CONTAINERS[component])
    return container.get("env") or []


def rendered_airflow_cfg(docs: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """The airflow.cfg of the rendered ConfigMap, ``{section: {key: value}}``.

    :param docs: what :func:`helm_template` returned.
    """
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(_config_map(docs)["data"]["airflow.cfg"])
    return {s: dict(parser[s]) for s in parser.sections()}
