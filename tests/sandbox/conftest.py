"""Fixtures for the sandbox API server tests: a CA, a running server, kubeconfigs, clients
(what they return: ``tests.support.api_server``)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hcp_sandbox import apiserver, pki
from hcp_sandbox.store import Store
from tests.support.api_server import API_TOKEN, ApiPki, ApiServer, fake_exec, seed_hosted_cluster


@pytest.fixture(scope="session")
def api_pki(tmp_path_factory: pytest.TempPathFactory) -> ApiPki:
    d = tmp_path_factory.mktemp("api-pki")
    ca_cert, ca_key = pki.make_ca()
    cert, key = pki.issue_cert(
        ca_cert, ca_key, "kube-apiserver", dns_names=["localhost"], ip_addresses=["127.0.0.1"]
    )
    (d / "tls.crt").write_bytes(cert)
    (d / "tls.key").write_bytes(key)
    return ApiPki(ca_cert, d / "tls.crt", d / "tls.key")


@pytest.fixture(scope="session")
def api_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """One event loop in a background thread, shared by every server of the session."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="api-test-loop", daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=5)
    loop.close()


@pytest.fixture
def api_start(
    api_pki: ApiPki, api_loop: asyncio.AbstractEventLoop, tmp_path: Path
) -> Iterator[Callable[..., ApiServer]]:
    """
    Start API servers on 127.0.0.1 (random port), each with a fresh store seeded with the
    HostedCluster ``clusters/x``; keyword arguments go to :func:`hcp_sandbox.apiserver.make_app`.
    """
    runners = []

    def start(**make_app_kwargs: Any) -> ApiServer:
        store = Store()
        seed_hosted_cluster(store)
        d = tmp_path / f"server-{len(runners)}"
        d.mkdir()
        request_log = d / "requests.jsonl"
        app = apiserver.make_app(
            store, token=API_TOKEN, exec_handler=fake_exec, request_log=request_log, **make_app_kwargs
        )
        ctx = pki.server_ssl_context(api_pki.cert_path, api_pki.key_path)
        runner = asyncio.run_coroutine_threadsafe(
            apiserver.start_server(app, "127.0.0.1", 0, ctx), api_loop
        ).result(10)
        runners.append(runner)
        port = apiserver.bound_port(runner)
        server = ApiServer(
            store, port, f"https://127.0.0.1:{port}", d / "kubeconfig", api_loop, d, request_log
        )
        server._ca = api_pki.ca_pem
        server.write_kubeconfig(server.kubeconfig, API_TOKEN)
        return server

    yield start
    for runner in runners:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), api_loop).result(10)


@pytest.fixture
def api_server(api_start: Callable[..., ApiServer]) -> ApiServer:
    """A running API server without runtime fault handler nor authorizer."""
    return api_start()


@pytest.fixture
def api_client(api_server: ApiServer) -> Iterator[Any]:
    """A kubernetes ``ApiClient`` configured from the server's kubeconfig."""
    from kubernetes import client, config

    configuration = client.Configuration()
    config.load_kube_config(config_file=str(api_server.kubeconfig), client_configuration=configuration)
    api = client.ApiClient(configuration)
    yield api
    api.close()
