"""The status page through the UI's real login, in headless Chromium driven over the DevTools protocol.

A real ``airflow api-server`` (the simple auth manager in its normal mode: users, generated
passwords) reads the sandbox (HostedClusters from its API, a backup and a drill report in its S3).
Anonymous, the page answers 401 and the UI sends the browser to the login form; a user types the
username and password from the generated passwords file, signs in, and the page then renders every
hosted cluster with its backup and drill. Skipped when no chromium binary is installed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import websocket
from test_browser import CHROMIUM, chromium_command
from ui_fixtures import airflow_env, make_manifest, migrate

from hcp_etcd.naming import ClusterRef, format_backup_ts, manifest_key, rfc3339, snapshot_key
from hcp_etcd.restore.report import build_drill_report, drill_report_key
from tests.support.waits import wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        CHROMIUM is None, reason="no chromium binary on PATH (Debian: apt-get install -y chromium)"
    ),
]
USER = "operator"  # the least role that may read the backup DAG, hence the page
START_TIMEOUT = 300  # a cold api-server on a busy 2-core machine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ApiServer:
    url: str
    password: str
    log: Path


@pytest.fixture
def sandbox_backups(sandbox) -> Iterator[dict[str, str]]:
    """A backup of ha-one and a passed drill of it, under a prefix of this test; the env to read them."""
    from hcp_etcd.hooks.snapshot_store import SnapshotStoreHook

    prefix = f"ui-login-{uuid.uuid4().hex[:8]}/backups"
    saved = {k: os.environ.get(k) for k in sandbox.env}
    os.environ.update(sandbox.env)  # the hook reaches the sandbox's S3 through aws_default
    store = SnapshotStoreHook()
    ref = ClusterRef("clusters", "ha-one")
    created = datetime.now(UTC) - timedelta(hours=2)
    ts = format_backup_ts(created)
    store.put_bytes(b"snapshot", sandbox.bucket, snapshot_key(prefix, ref, ts))
    manifest = make_manifest(ref, created, bucket=sandbox.bucket, snapshot_key=snapshot_key(prefix, ref, ts))
    store.put_json(manifest, sandbox.bucket, manifest_key(prefix, ref, ts))
    drilled = created + timedelta(hours=1)
    report = build_drill_report(
        ref=ref, target="drills/ha-one-drill", as_of=drilled, ran_at=drilled,
        backup={"manifest_uri": f"s3://{sandbox.bucket}/{manifest_key(prefix, ref, ts)}",
                "manifest": {"created_at": rfc3339(created)}},
        created={"created_at": rfc3339(drilled)}, restored={"recovery_seconds": 42.0},
        checks=[{"name": "member_count", "passed": True, "detail": "3 members"}], errors=[],
        run_id="manual__1",
    )  # fmt: skip
    store.put_json(report, sandbox.bucket, drill_report_key(prefix, ref, drilled))
    try:
        yield {**sandbox.env, "HCP_ETCD_PREFIX": prefix}
    finally:
        store.delete_objects(
            sandbox.bucket, [o.key for o in store.list_objects(sandbox.bucket, prefix + "/")]
        )
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def api_server(sandbox_backups, tmp_path, metadata_db) -> Iterator[ApiServer]:
    """``airflow api-server`` on a free loopback port, the simple auth manager with a login."""
    port = _free_port()
    home = tmp_path / "airflow"
    env = airflow_env(
        home,
        **sandbox_backups,
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=f"{USER}:viewer",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="False",
        HCP_ETCD_UI_CACHE_SECONDS="0",
    )
    migrate(env, metadata_db)
    log = tmp_path / "api-server.log"
    with log.open("w") as out:
        # A session of its own: the api-server's worker processes are stopped with it.
        cmd = [sys.executable, "-m", "airflow", "api-server", "--host", "127.0.0.1", "--port", str(port)]
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    passwords = home / "simple_auth_manager_passwords.json.generated"

    def up() -> bool:
        assert proc.poll() is None, f"api-server exited ({proc.returncode}):\n{log.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=5):
                return passwords.exists()
        except OSError:
            return False

    try:
        wait_until("the api-server to answer", up, START_TIMEOUT, log=log)
        yield ApiServer(url, json.loads(passwords.read_text())[USER], log)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


class Browser:
    """Headless Chromium and one tab, driven over the DevTools protocol (what a user's clicks do)."""

    def __init__(self, tmp_path: Path) -> None:
        self.proc = subprocess.Popen(chromium_command(tmp_path, "--remote-debugging-port=0", "about:blank"),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
        port_file = tmp_path / "profile" / "DevToolsActivePort"
        port = wait_until(
            "chromium's DevTools port", lambda: port_file.exists() and port_file.read_text(), 60
        )
        tabs_url = f"http://127.0.0.1:{port.splitlines()[0]}/json/list"

        def tab() -> str | None:
            with urllib.request.urlopen(tabs_url, timeout=5) as answer:
                pages = [t for t in json.load(answer) if t["type"] == "page"]
            return pages[0]["webSocketDebuggerUrl"] if pages else None

        self.ws = websocket.create_connection(wait_until("a chromium tab", tab, 60), timeout=60,
                                              suppress_origin=True)  # fmt: skip
        self.ids = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.ids += 1
        self.ws.send(json.dumps({"id": self.ids, "method": method, "params": params}))
        while True:  # events arrive in between; only the answer to this call matters
            message = json.loads(self.ws.recv())
            if message.get("id") == self.ids:
                assert "error" not in message, f"{method}: {message['error']}"
                return message["result"]

    def eval(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result["result"].get("value")

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def wait_for(self, what: str, expression: str, timeout: float = 60) -> Any:
        return wait_until(
            what, lambda: self.eval(expression), timeout, detail=lambda: f"at {self.eval('location.href')}"
        )

    def type_into(self, selector: str, text: str) -> None:
        """Focus the field and type, as a keyboard does (the form's own handlers see the input)."""
        query = f"document.querySelector({json.dumps(selector)})"
        found = f"(() => {{ const e = {query}; e?.focus(); return !!e; }})()"
        assert self.eval(found), f"no {selector} on the page"
        self.call("Input.insertText", text=text)

    def close(self) -> None:
        self.ws.close()
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def browser(tmp_path) -> Iterator[Browser]:
    b = Browser(tmp_path)
    try:
        yield b
    finally:
        b.close()


def test_anonymous_is_refused_then_the_login_opens_the_page(api_server, browser):
    page = f"{api_server.url}/hcp-etcd/"
    # Anonymous, without the browser: the page and its JSON are refused.
    for path in ("/hcp-etcd/", "/hcp-etcd/api/status"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(api_server.url + path, timeout=30)
        assert refused.value.code == 401
    # Anonymous in the browser: the UI sends it to the login form.
    browser.open(f"{api_server.url}/")
    login_form = (
        "location.pathname.startsWith('/auth/login') && !!document.querySelector('input[name=password]')"
    )
    browser.wait_for("the UI to send an anonymous visitor to the login form", login_form)
    assert "etcd backups of hosted clusters" not in browser.eval("document.body.innerText")

    # Sign in as a user does: type the username and the generated password, press "Sign in".
    browser.type_into("input[name=username]", USER)
    browser.type_into("input[name=password]", api_server.password)
    browser.wait_for(
        "the Sign in button to be enabled", "!document.querySelector('button[type=submit]').disabled"
    )
    browser.eval("document.querySelector('button[type=submit]').click()")
    browser.wait_for("signing in to leave the login form", "!location.pathname.startsWith('/auth/login')")

    # The same browser session opens the page: the login's cookie is what lets it in.
    browser.open(page)
    rows = browser.wait_for(
        "the page to render its rows",
        "Array.from(document.querySelectorAll('tr[data-cluster]'),"
        " r => [r.dataset.cluster, r.dataset.state])",
    )
    states = dict(rows)
    assert states["clusters/ha-one"] == "ok" and states["clusters/single-one"] == "no-backup", states
    text = browser.eval("document.body.innerText")
    assert "etcd backups of hosted clusters" in text and "HCP_ETCD_BUCKET is not set" not in text
    ha_one = browser.eval("document.querySelector('tr[data-cluster=\"clusters/ha-one\"]').innerText")
    assert "passed" in ha_one and "42.0 s" in ha_one and "25.0 MiB" in ha_one, ha_one
    assert browser.eval("location.href") == page
