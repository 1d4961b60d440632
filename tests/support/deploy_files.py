"""The deployment files, parsed as the tools that apply them read them (no Helm, no Docker, no cluster).

``include/deploy/values-*.yaml`` merged as ``helm install -f a -f b`` merges them,
``include/rbac/*.yaml`` as ``kubectl apply -f include/rbac/`` reads them, ``docker-compose.yaml``
and the ``Dockerfile`` as text. The tests of ``tests/deploy`` and ``tests/foundation`` check that
these files agree with one another and with the README.
"""

from __future__ import annotations

import copy
import re
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
