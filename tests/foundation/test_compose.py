"""`docker-compose.yaml` checked statically: no Docker engine is needed to run these tests."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.support.deploy_files import (
    compose_command,
    compose_env_file,
    compose_mounts,
    compose_service_env,
    dockerfile_path_entries,
)

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = Path(__file__).parent / "data" / "compose-spec.json"
AIRFLOW_SERVICES = {
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-worker": "celery worker",
    "airflow-triggerer": "triggerer",
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yaml").read_text())


def test_valid_against_the_compose_specification(compose: dict[str, Any]) -> None:
    jsonschema.validate(compose, json.loads(SCHEMA.read_text()))


def test_official_airflow_services_are_present(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"postgres", "redis", "airflow-init", *AIRFLOW_SERVICES} <= set(services)
    for name, command in AIRFLOW_SERVICES.items():
        assert services[name]["command"] == command, name


def test_every_airflow_service_runs_the_image_built_from_the_repo(compose: dict[str, Any]) -> None:
    images = set()
    for name in [*AIRFLOW_SERVICES, "airflow-init"]:
        service = compose["services"][name]
        assert service["build"] == ".", name
        images.add(service["image"])
        env = service["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert (
            env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:")
            or "@redis:" in (env["AIRFLOW__CELERY__BROKER_URL"])
        )
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql")
        mounts = {v.split(":")[0]: v.split(":")[1] for v in service["volumes"]}
        for folder in ("dags", "plugins", "include"):
            assert mounts.get(f"./{folder}") == f"/opt/airflow/{folder}", (name, folder)
            assert (ROOT / folder).is_dir(), folder
    assert len(images) == 1, images


def test_dockerfile_installs_the_locked_requirements_on_the_pinned_airflow() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    base = re.search(r"^FROM\s+(\S+)", dockerfile, re.M)
    assert base is not None and base.group(1) == "apache/airflow:3.3.2-python3.11"
    assert re.search(r"pip install .*-r \S*requirements\.txt -c \S*constraints\.txt", dockerfile)
    pinned = (ROOT / "requirements.txt").read_text()
    assert "apache-airflow==3.3.2" in pinned


def test_the_pool_the_backup_dag_uses_is_created_at_init(compose: dict[str, Any]) -> None:
    init = " ".join(compose["services"]["airflow-init"]["command"])
    assert "airflow db migrate" in init
    assert "airflow pools set hcp_etcd_backup" in init


@pytest.mark.skipif(os.geteuid() != 0, reason="giving files to another user needs root, as airflow-init has")
def test_init_gives_the_config_and_logs_to_the_user_the_containers_run_as(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    """airflow-init runs as root; the others as ``AIRFLOW_UID``. Airflow writes airflow.cfg 0600 (its
    configuration.py, ``make_group_other_inaccessible``), so unless init gives it to that user no other
    container reads its shared JWT secret, and a root-owned ./logs refuses their logs. The command runs as
    written in bash, as root, with an ``airflow`` that writes the file as Airflow does (the real one
    runs in ``make test-prod``)."""
    init = compose["services"]["airflow-init"]
    assert init["user"] == "0:0" and compose["x-airflow-common"]["user"] == "${AIRFLOW_UID:-50000}:0"
    fake = tmp_path / "bin" / "airflow"
    fake.parent.mkdir()
    fake.write_text(
        f"#!{sys.executable}\n"
        "import os, sys\n"
        "if sys.argv[1:3] == ['config', 'list']:\n"
        "    path = os.environ['AIRFLOW_CONFIG']\n"
        "    open(path, 'a').close()\n"
        "    os.chmod(path, 0o600)\n"
        "    open(path, 'w').write('[api_auth]\\njwt_secret = generated\\n')\n"
    )
    fake.chmod(0o755)
    home = tmp_path / "opt-airflow"  # the container's /opt/airflow, its mounts made by Docker as root
    for mount in ("config", "logs"):
        (home / mount).mkdir(parents=True)
    env = {
        **os.environ,
        "PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}",
        "AIRFLOW_HOME": str(home),
        "AIRFLOW_CONFIG": str(home / "config" / "airflow.cfg"),
    }
    command = compose_command(init, {"AIRFLOW_UID": "54321"})
    result = subprocess.run([init["entrypoint"], *command], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    for path in (home / "config" / "airflow.cfg", home / "config", home / "logs"):
        owner = (path.stat().st_uid, path.stat().st_gid)
        assert owner == (54321, 0), f"{path.name} belongs to {owner}, not to the containers' user"


def test_no_credentials_in_the_compose_file(compose: dict[str, Any]) -> None:
    text = (ROOT / "docker-compose.yaml").read_text()
    assert "AIRFLOW_CONN_" not in "".join(str(compose["x-airflow-common"]["environment"]))
    assert not re.search(r"aws_secret_access_key|AKIA[0-9A-Z]{16}", text, re.I)


def test_docker_compose_config_accepts_the_file() -> None:
    """The Compose CLI's own parser, where it is installed (it needs no engine for `config`)."""
    for argv in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(argv[0]) and subprocess.run([*argv, "version"], capture_output=True).returncode == 0:
            result = subprocess.run([*argv, "config", "-q"], cwd=ROOT, capture_output=True, text=True)
            assert result.returncode == 0, result.stderr
            return
    pytest.skip("neither `docker compose` nor `docker-compose` is installed; the schema test covers the file")


def test_kubeconfig_and_hcp_are_mounted_into_every_airflow_service(compose: dict[str, Any]) -> None:
    """Each service that runs the project's code sees the kubeconfig folder and the `hcp` folder."""
    (bin_dir,) = dockerfile_path_entries()
    for name in AIRFLOW_SERVICES:
        mounts = compose_mounts(compose["services"][name])
        assert mounts.get("/opt/airflow/secrets") == "./secrets", name
        assert mounts.get(bin_dir) == "./hcp-bin", name
    ignored = (ROOT / ".gitignore").read_text().split()
    for host in ("./secrets", "./hcp-bin", "./airflow.env"):
        assert host[1:] in ignored or f"{host[1:]}/" in ignored, f"{host} holds credentials or a binary"
    volumes = compose["x-airflow-common"]["volumes"]
    read_only = [v for v in volumes if v.split(":")[1] in ("/opt/airflow/secrets", bin_dir)]
    assert len(read_only) == 2 and all(v.endswith(":ro") for v in read_only)


def test_every_setting_put_in_airflow_env_reaches_every_airflow_service(compose: dict[str, Any]) -> None:
    """`environment` wins over `env_file` in Compose: a setting the compose file also lists (with a
    default) would silently override the user's airflow.env, e.g. turn a replica bucket off."""
    names = set(re.findall(r"HCP_ETCD_[A-Z0-9_]*[A-Z0-9]", (ROOT / "README.md").read_text()))
    assert {"HCP_ETCD_BUCKET", "HCP_ETCD_REPLICA_BUCKET", "HCP_ETCD_BACKUP_SCHEDULE"} <= names, sorted(names)
    env_file = {name: f"set-in-airflow-env-{name}" for name in names}
    for service in [*AIRFLOW_SERVICES, "airflow-init"]:
        assert compose_env_file(compose["services"][service]) == "./airflow.env", service
        env = compose_service_env(compose["services"][service], env_file, shell={})
        overridden = {n: env.get(n) for n in names if env.get(n) != env_file[n]}
        assert not overridden, f"{service}: the compose file overrides airflow.env for {overridden}"
