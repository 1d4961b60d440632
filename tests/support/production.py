"""The production shape on one machine, without Docker: what ``docker compose up`` runs (issue 17).

:func:`start_production` starts, as separate processes, each in a process group of its own:

- **Postgres** and **Redis** from the distribution's packages (``postgresql``, ``redis-server``), in
  fresh directories, on free loopback ports; the database, user and password of the compose file's
  ``postgres`` service;
- the **Airflow components** of ``docker-compose.yaml``: ``airflow-init``'s command first (migrate, the
  ``hcp_etcd_backup`` pool), then ``airflow-apiserver``, ``airflow-scheduler``,
  ``airflow-dag-processor``, ``airflow-triggerer`` and **two** ``airflow-worker`` replicas (as
  ``docker compose up --scale airflow-worker=2``), each with the command and the environment the
  compose file gives that service (:func:`tests.support.deploy_files.compose_service_env`): the
  sandbox's ``airflow.env`` as the ``env_file``, the ``environment`` over it, interpolated from the
  "shell" environment a user would run ``docker compose`` in.

What is not the compose file's, and why (:meth:`Production.localize`): what Docker gives each
container, processes on one machine must be given explicitly.

- Each component has a home of its own (``HOME/<service>-<replica>``: the container's
  ``/opt/airflow``, where it writes its own ``airflow.cfg`` as a container does), holding the compose
  file's bind mounts: ``./dags``, ``./plugins`` and ``./include`` link to the repository, ``./logs``
  and ``./config`` to directories every component shares (``HOME/host/``, the user's checkout).
- The service names resolve to loopback ports (Compose's network DNS).
- Each component gets its own ports (a container has its own network namespace) and each worker its
  own Celery node name (a container its own hostname).
- The tests' own timing settings (how soon a dead task is retried, a longer api-server timeout) are
  listed with their reasons in :data:`TEST_SETTINGS`. Everything else keeps Airflow's defaults: a
  faster setting can change what happens (without the dag-processor's re-parse every 30 s, the
  scheduler never learns of a backfill's runs, and the drill it then runs never comes).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.airflow_run import AIRFLOW, Airflow, free_port
from tests.support.deploy_files import (
    REPO,
    compose_command,
    compose_env_file,
    compose_mounts,
    compose_service_env,
    interpolate,
    load_compose,
)
from tests.support.sandbox import parse_env_file
from tests.support.waits import wait_until

PACKAGES = "postgresql redis-server"  # Debian's names: what .ci/run installs
CONTAINER_HOME = "/opt/airflow"  # the image's AIRFLOW_HOME, where the compose file mounts the tree
WRITTEN = ("./logs", "./config")  # mounts the components write to (git-ignored in a checkout)
# The components, in start order: the compose service and how many replicas.
COMPONENTS = (
    ("airflow-apiserver", 1),
    ("airflow-scheduler", 1),
    ("airflow-dag-processor", 1),
    ("airflow-triggerer", 1),
    ("airflow-worker", 2),
)
# Settings of the tests, not of the compose file, each with its reason: timing only, no behaviour.
TEST_SETTINGS = {
    # A task whose worker died is failed and retried after this many seconds without a heartbeat
    # (default 300), looked for every 5 s (default 10): the worker-SIGKILL test waits for it (30 s: a
    # busy machine can delay a live task's heartbeat).
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
    # A task the killed worker had taken but not started is queued again after this many seconds
    # (compose: 180), looked for every 10 s (compose: 30): the same requeue, sooner (once it cost the
    # fleet run 11.5 minutes at Airflow's 600 s). 60 s: a busy machine can take a while to start a task.
    "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "60",
    "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT_CHECK_INTERVAL": "10",
    # A task's supervisor gives up on the api-server after 5 s by default; on 2 cores running every
    # component, Postgres and the sandbox, an answer can take longer (as in bench/airflow_run.py).
    "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "30",
}
# The environment `docker compose` is run in (what its ${...} read): the `.env` the README has a user
# write (AIRFLOW_UID, their own user id, whom airflow-init gives ./config and ./logs), nothing else.
SHELL: dict[str, str] = {"AIRFLOW_UID": str(os.getuid())}
# What the tests put in airflow.env beside the sandbox's connections, as a user's airflow.env would.
ENV_FILE = {
    # Manual and backfilled runs only: the backup DAGs' schedules have no fire time before 2028. The
    # drill keeps its weekly one (a backfill needs it; catchup is off and it has no start date, so
    # nothing runs before next Sunday 04:00).
    "HCP_ETCD_BACKUP_SCHEDULE": "0 0 29 2 *",
    "HCP_ETCD_ONLINE_SCHEDULE": "",
    "HCP_ETCD_POOL_SLOTS": "2",  # read by airflow-init's `airflow pools set`
    "HCP_ETCD_RETRY_DELAY_SECONDS": "5",
}
# The tier's fleet: one HA hosted cluster and three single-replica ones (4 MiB of data each), and the
# DAGs the tests run.
FLEET = {"prod-ha": 3, "prod-a": 1, "prod-b": 1, "prod-c": 1}
DAGS = ("hcp_etcd_backup", "hcp_etcd_restore", "hcp_etcd_restore_drill")
ADMIN = "admin"  # the simple auth manager's default user ([core] simple_auth_manager_users)


def missing_packages() -> str | None:
    """Why the production shape cannot start here (a skip reason), or None."""
    missing = [
        name
        for name, found in (("postgresql", _pg_bin("initdb")), ("redis-server", shutil.which("redis-server")))
        if not found
    ]
    if missing:
        return f"needs {' and '.join(missing)} (Debian: apt-get install -y {PACKAGES})"
    return None


def _pg_bin(name: str) -> str | None:
    """A PostgreSQL server binary: Debian keeps them out of PATH, under /usr/lib/postgresql/N/bin."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


@dataclass
class Server:
    """A server process in a group of its own, with its output in a file."""

    name: str
    argv: list[str]
    log: Path
    env: dict[str, str] | None = None
    proc: subprocess.Popen[bytes] | None = None

    def start(self, preexec: Any = None) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=preexec,
            )

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the whole process group (the process and everything it started)."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def stop(self, timeout: float = 30) -> None:
        """TERM the group, KILL it after ``timeout`` s."""
        if self.proc is None:
            return
        self.kill(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self.proc.wait(10)
        self.kill()  # what outlived its parent


def _postgres_user() -> Any:
    """initdb and postgres refuse to run as root: as root, the package's ``postgres`` user (its
    ``pwd`` entry) to run them as; None otherwise (they run as whoever runs the tests)."""
    if os.getuid() != 0:
        return None
    import pwd

    return pwd.getpwnam("postgres")


class Postgres:
    """A PostgreSQL server of its own, with the compose file's database, user and password.

    :param service: the compose file's ``postgres`` service.
    """

    def __init__(self, service: dict[str, Any]) -> None:
        env = service["environment"]
        self.user, self.password, self.db = env["POSTGRES_USER"], env["POSTGRES_PASSWORD"], env["POSTGRES_DB"]
        self.port = free_port()
        # Outside pytest's temporary directories: the postgres user must reach it.
        self.dir = Path(tempfile.mkdtemp(prefix="hcp-etcd-postgres-"))
        self.server: Server | None = None

    def start(self) -> None:
        data, pwfile = self.dir / "data", self.dir / "pw"
        pwfile.write_text(self.password)
        user = _postgres_user()
        demote = None
        if user is not None:
            os.chmod(self.dir, 0o755)
            for path in (self.dir, pwfile):
                os.chown(path, user.pw_uid, user.pw_gid)

            def demote() -> None:
                os.setgid(user.pw_gid)
                os.setuid(user.pw_uid)

        initdb = [
            _pg_bin("initdb") or "initdb",
            "-D",
            str(data),
            "-U",
            self.user,
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "-E",
            "UTF8",
            "--no-sync",
        ]
        result = subprocess.run(initdb, capture_output=True, text=True, preexec_fn=demote, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed: {result.stdout}{result.stderr}")
        # Durability off (fsync, synchronous commit): a test database, thrown away afterwards; every
        # query and lock behaves the same.
        argv = [
            _pg_bin("postgres") or "postgres",
            "-D",
            str(data),
            "-p",
            str(self.port),
            "-k",
            str(self.dir),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=300",
        ]
        self.server = Server("postgres", argv, self.dir / "postgres.log")
        self.server.start(demote)
        wait_until("postgres to accept connections", self._accepts, 60, log=self.server.log)
        with contextlib.closing(self.connect("postgres")) as conn:
            conn.autocommit = True
            conn.cursor().execute(f'CREATE DATABASE "{self.db}"')

    def _accepts(self) -> bool:
        try:
            self.connect("postgres").close()
            return True
        except Exception:  # any refusal means not yet
            return False

    def connect(self, db: str | None = None) -> Any:
        import psycopg2

        return psycopg2.connect(
            host="127.0.0.1", port=self.port, user=self.user, password=self.password, dbname=db or self.db
        )

    def dump(self) -> bytes:
        """Every row of every table of the metadata database, as ``COPY ... TO STDOUT`` writes them."""
        import io

        out = io.BytesIO()
        with contextlib.closing(self.connect()) as conn, conn.cursor() as cur:
            cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")
            for (table,) in cur.fetchall():
                out.write(f"-- {table}\n".encode())
                cur.copy_expert(f'COPY "{table}" TO STDOUT', out)
        return out.getvalue()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class Redis:
    """A Redis server of its own: the Celery broker (nothing saved to disk)."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        argv = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
        ]
        self.server = Server("redis", argv, directory / "redis.log")

    def start(self) -> None:
        self.server.start()
        wait_until("redis to answer PING", self._pong, 30, log=self.server.log)

    def _pong(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        self.server.stop()


@dataclass
class Component:
    """One Airflow component: a compose service's replica."""

    service: str
    replica: int
    server: Server

    @property
    def name(self) -> str:
        return f"{self.service}-{self.replica}"

    @property
    def env(self) -> dict[str, str]:
        return self.server.env or {}


class Production(Airflow):
    """The Airflow of docker-compose.yaml, on Postgres and Redis, wired to a sandbox.

    Runs are triggered and read as :class:`bench.airflow_run.Airflow` does (REST API, metadata DB),
    but the REST API is signed in to with the simple auth manager's generated password, and the
    metadata DB is Postgres.

    :param home: a fresh directory: ``AIRFLOW_HOME`` (the container's ``/opt/airflow``).
    :param sandbox_env_file: the sandbox's ``airflow.env``: the services' ``env_file``.
    """

    def __init__(self, home: Path, sandbox_env_file: Path) -> None:
        self.home = home
        self.compose = load_compose()
        self.services = self.compose["services"]
        self.postgres = Postgres(self.services["postgres"])
        self.redis = Redis(home)
        self.port = free_port()
        assert compose_env_file(self.services["airflow-worker"]) == "./airflow.env"
        self.env_file = {**parse_env_file(sandbox_env_file), **ENV_FILE}
        self.components: list[Component] = []
        self._token: str | None = None
        self.proc = None
        self.env: dict[str, str] = {}  # the scheduler's, once started: `airflow` CLI calls run in it

    # ---- the environment of a service -----------------------------------------------------------

    def container_home(self, service: str, replica: int = 1) -> Path:
        """The ``/opt/airflow`` of one replica of a compose service, with the service's bind mounts.

        :param service: the compose service.
        :param replica: 1, 2, ...
        """
        home = self.home / f"{service}-{replica}"
        if home.exists():
            return home  # a restarted container keeps its filesystem
        home.mkdir(parents=True)
        for target, source in compose_mounts(self.services[service]).items():
            if not target.startswith(CONTAINER_HOME + "/"):
                continue  # secrets and hcp: the sandbox's connections name their own files
            link = home / target.removeprefix(CONTAINER_HOME + "/")
            in_repo = (REPO / source).resolve()
            # The tree's own folders as they are; what the containers write (logs, config) in a
            # directory of the test's, shared by every component as the checkout's would be.
            shared = in_repo if in_repo.is_dir() and source not in WRITTEN else self.home / "host" / source
            shared.mkdir(parents=True, exist_ok=True)
            link.symlink_to(shared)
        return home

    def component_env(self, service: str, replica: int = 1) -> dict[str, str]:
        """The environment of one replica of a compose service here.

        :param service: the compose service.
        :param replica: 1, 2, ...
        """
        home = self.container_home(service, replica)
        container = compose_service_env(self.services[service], self.env_file, SHELL)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "HCP_ETCD"))}
        env.update(self.localize(container, home))
        env.update(TEST_SETTINGS)
        env["AIRFLOW_HOME"] = str(home)
        # The image's PATH has `airflow` on it; here the virtualenv's.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        # A container has its own network namespace; processes here share one: a port each.
        env["AIRFLOW__API__PORT"] = str(self.port)
        env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] = str(free_port())
        env["AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT"] = str(free_port())
        env["AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT"] = str(free_port())
        return env

    def localize(self, container: dict[str, str], home: Path) -> dict[str, str]:
        """What Docker resolves, made explicit: service host names to loopback ports, the container's
        ``/opt/airflow`` to ``home``.

        :param container: a service's environment as the compose file gives it.
        :param home: the container's ``/opt/airflow`` here.
        """
        ports = {
            "postgres": (5432, self.postgres.port),
            "redis": (6379, self.redis.port),
            "airflow-apiserver": (8080, self.port),
        }

        def host(match: re.Match[str]) -> str:
            name, port = match[2], match[3]
            default, local = ports[name]
            assert port in (None, f":{default}"), f"{name}{port}: not the port the service listens on"
            return f"{match[1]}127.0.0.1:{local}"

        pattern = re.compile(rf"([@/])({'|'.join(map(re.escape, ports))})(:\d+)?(?=[/:]|$)")
        out = {}
        for key, value in container.items():
            value = pattern.sub(host, value)
            out[key] = value.replace(CONTAINER_HOME, str(home))
        return out

    # ---- start and stop ---------------------------------------------------------------------------

    def start(
        self, timeout: float = 300, dag_ids: tuple[str, ...] = (), migrated_db: Path | None = None
    ) -> None:
        """Postgres, Redis, airflow-init, then every component; ready when each answers its health
        check and the DAGs are parsed; the DAGs are then unpaused (the compose file pauses new DAGs).

        :param timeout: seconds for the whole start.
        :param dag_ids: the DAGs to wait for and unpause.
        :param migrated_db: not used (Postgres is migrated by airflow-init, as in compose).
        """
        started = time.monotonic()
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "component-logs").mkdir(exist_ok=True)
        self.postgres.start()
        self.redis.start()
        self._init()
        for service, replicas in COMPONENTS:
            for replica in range(1, replicas + 1):
                self._start_component(service, replica)
        for component in list(self.components):
            left = max(10.0, timeout - (time.monotonic() - started))
            wait_until(f"{component.name} ready", self._ready(component), left, log=component.server.log)
        dag_log = self.component("airflow-dag-processor").server.log
        left = max(10.0, timeout - (time.monotonic() - started))
        wait_until(f"DAGs {list(dag_ids)} parsed", lambda: self._parsed(set(dag_ids)), left, log=dag_log)
        for dag_id in dag_ids:
            self.set_paused(dag_id, False)

    def _init(self) -> None:
        """``airflow-init``: its entrypoint and command, in its environment."""
        service = self.services["airflow-init"]
        entrypoint = interpolate(service["entrypoint"], SHELL)
        log = self.home / "component-logs" / "airflow-init.log"
        with log.open("wb") as out:
            result = subprocess.run(
                [entrypoint, *compose_command(service, SHELL)],
                env=self.component_env("airflow-init"),
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=600,
                check=False,
            )
        if result.returncode != 0:
            raise RuntimeError(f"airflow-init failed ({result.returncode}): {log.read_text()[-3000:]}")

    def _start_component(self, service: str, replica: int) -> Component:
        env = self.component_env(service, replica)
        # The image's entrypoint runs `airflow <command>`; here the virtualenv's airflow.
        argv = [AIRFLOW, *compose_command(self.services[service], SHELL)]
        if service == "airflow-worker":
            # A container's hostname names its Celery node; on one machine each replica names its own.
            argv += ["--celery-hostname", f"worker-{replica}@%h"]
        elif service == "airflow-scheduler":
            self.env = env
        log = self.home / "component-logs" / f"{service}-{replica}.log"
        component = Component(service, replica, Server(f"{service}-{replica}", argv, log, env))
        component.server.start()
        self.components = [c for c in self.components if c.name != component.name] + [component]
        return component

    def restart(self, component: Component, timeout: float = 180) -> Component:
        """Stop a component (TERM, as ``docker compose restart``), start it again, wait until ready.

        :param component: the component.
        :param timeout: seconds for it to be ready again.
        """
        component.server.stop()
        return self.start_again(component, timeout)

    def start_again(self, component: Component, timeout: float = 180) -> Component:
        """Start a stopped (or killed) component again, as ``restart: always`` does; wait until ready.

        :param component: the component.
        :param timeout: seconds for it to be ready.
        """
        offset = component.server.log.stat().st_size if component.server.log.exists() else 0
        since = self._query("SELECT max(id) FROM job")[0][0] or 0
        again = self._start_component(component.service, component.replica)
        wait_until(
            f"{again.name} started again", self._ready(again, offset, since), timeout, log=again.server.log
        )
        return again

    def _ready(self, component: Component, log_offset: int = 0, after_job: int = 0) -> Callable[[], bool]:
        """The health check of a component (the compose file's ``healthcheck``, read directly): the
        api-server's ``/api/v2/version``, the scheduler's ``/health``, a heartbeating job of the
        dag-processor or triggerer (what ``airflow jobs check`` reads), a worker's "ready" line
        (what ``celery inspect ping`` would answer).

        :param component: the component.
        :param log_offset: for a worker started again, where its new output begins in its log.
        :param after_job: for a job started again, the newest job id before it.
        """
        jobs = {"airflow-dag-processor": "DagProcessorJob", "airflow-triggerer": "TriggererJob"}
        if component.service == "airflow-apiserver":
            return self._api_up
        if component.service == "airflow-scheduler":
            return lambda: self._healthy(component)
        if component.service in jobs:
            return lambda: self.job_alive(jobs[component.service], after_id=after_job)
        if component.service == "airflow-worker":
            return lambda: b" ready." in component.server.log.read_bytes()[log_offset:]
        raise NotImplementedError(f"no health check for {component.service}")

    def component(self, service: str, replica: int = 1) -> Component:
        return next(c for c in self.components if (c.service, c.replica) == (service, replica))

    def workers(self) -> list[Component]:
        return [c for c in self.components if c.service == "airflow-worker"]

    def _healthy(self, component: Component) -> bool:
        port = component.env["AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT"]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=3):
                return True
        except OSError:
            return False

    def job_alive(self, job_type: str, after_id: int = 0) -> bool:
        """A running job of that type heartbeated in the last 30 s (what ``airflow jobs check`` reads).

        :param job_type: ``TriggererJob``, ``DagProcessorJob``, ...
        :param after_id: only jobs with a greater id (a restarted component's new job).
        """
        rows = self._query(
            "SELECT 1 FROM job WHERE job_type = ? AND state = 'running' AND id > ? "
            "AND latest_heartbeat > now() - interval '30 seconds'",
            job_type,
            after_id,
        )
        return bool(rows)

    def run_state(self, dag_id: str, run_id: str) -> str | None:
        """A run's state (None: no such run yet).

        :param dag_id: the DAG.
        :param run_id: the run.
        """
        rows = self._query("SELECT state FROM dag_run WHERE dag_id = ? AND run_id = ?", dag_id, run_id)
        return str(rows[0][0]) if rows else None

    def trigger_of(self, run_id: str, task_id: str, map_index: int = 0) -> dict[str, int] | None:
        """The trigger a deferred task waits on and the triggerer running it (None: not deferred, or
        no triggerer has taken it yet).

        :param run_id: the run.
        :param task_id: the task.
        :param map_index: its map index.
        """
        rows = self._query(
            "SELECT t.id, t.triggerer_id FROM task_instance ti JOIN trigger t ON ti.trigger_id = t.id "
            "WHERE ti.run_id = ? AND ti.task_id = ? AND ti.map_index = ? AND ti.state = 'deferred' "
            "AND t.triggerer_id IS NOT NULL",
            run_id,
            task_id,
            map_index,
        )
        return {"trigger_id": rows[0][0], "triggerer_id": rows[0][1]} if rows else None

    def _parsed(self, dag_ids: set[str]) -> bool:
        return dag_ids <= {r[0] for r in self._query("SELECT dag_id FROM dag")}

    def stop(self) -> None:
        """Every component, then Redis and Postgres."""
        for component in reversed(self.components):
            component.server.stop()
        self.redis.stop()
        self.postgres.stop()

    # ---- reading and calling --------------------------------------------------------------------

    def _query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        import psycopg2

        try:
            with contextlib.closing(self.postgres.connect()) as conn, conn.cursor() as cur:
                cur.execute(sql.replace("?", "%s"), params)
                return [tuple(_as_text(v) for v in row) for row in cur.fetchall()]
        except psycopg2.Error:
            return []  # not migrated yet

    def password(self) -> str:
        """The admin's password, as the api-server generated it (the simple auth manager's file)."""
        path = self.container_home("airflow-apiserver") / "simple_auth_manager_passwords.json.generated"
        return str(json.loads(path.read_text())[ADMIN])

    def token(self, username: str = ADMIN, password: str | None = None) -> str:
        """A signed-in user's token: ``POST /auth/token`` with username and password, as the UI's login."""
        body = json.dumps({"username": username, "password": password or self.password()}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/auth/token",
            data=body,
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as resp:
            return str(json.load(resp)["access_token"])

    def _api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        if self._token is None:
            self._token = self.token()
        return super()._api(method, path, body)

    def executed(self, run_id: str) -> dict[str, set[tuple[str, int, int]]]:
        """What each worker executed of a run: ``(task_id, map_index, attempt)`` of every workload its
        log says it ran (a deferred task resumed is a second workload of the same attempt).

        :param run_id: the run.
        """
        pattern = re.compile(
            rf"Executing workload in Celery: .*?log_path='[^']*/run_id={re.escape(run_id)}/task_id=([^/']+)"
            r"(?:/map_index=(\d+))?/attempt=(\d+)\.log'"
        )
        found: dict[str, set[tuple[str, int, int]]] = {}
        for worker in self.workers():
            text = worker.server.log.read_text(errors="replace")
            found[worker.name] = {(m[1], int(m[2] or -1), int(m[3])) for m in pattern.finditer(text)}
        return found

    def task_log(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1, attempt: int = 1) -> str:
        """One attempt's task log (the shared ``./logs``).

        :param dag_id: the DAG.
        :param run_id: the run.
        :param task_id: the task.
        :param map_index: its map index (-1: not mapped).
        :param attempt: the try.
        """
        mapped = f"map_index={map_index}/" if map_index >= 0 else ""
        path = (
            self.home
            / "host"
            / "logs"
            / f"dag_id={dag_id}/run_id={run_id}/task_id={task_id}/{mapped}attempt={attempt}.log"
        )
        return path.read_text(errors="replace") if path.exists() else ""

    def log_text(self) -> bytes:
        """Every component's output and every task log."""
        files = [*(self.home / "component-logs").glob("*.log"), *(self.home / "host" / "logs").rglob("*")]
        return b"\n".join(p.read_bytes() for p in sorted(files) if p.is_file())


def _as_text(value: Any) -> Any:
    """A Postgres value as SQLite gives it to :class:`bench.airflow_run.Airflow`: times as UTC text."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ")
    return value


@contextlib.contextmanager
def start_production(home: Path, sandbox_env_file: Path, dag_ids: tuple[str, ...]) -> Iterator[Production]:
    """A started :class:`Production`, stopped afterwards (also when it did not start)."""
    prod = Production(home, sandbox_env_file)
    try:
        prod.start(dag_ids=dag_ids)
        yield prod
    finally:
        prod.stop()
