"""Least privilege, one whole-DAG run under it, and secret hygiene after everything (issue 6).

Runs last in the package (file order): the hygiene test searches what every reliability run left.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from hcp_etcd.operators import restore as rops
from tests.support.airflow import AirflowEnv, MetadataDb, make_airflow_env
from tests.support.harness import ONE, Figures, Harness

pytestmark = pytest.mark.integration

ONE_NS = f"clusters-{ONE}"


@pytest.fixture(scope="module")
def airflow(
    harness: Harness, metadata_db: MetadataDb, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AirflowEnv]:
    """An Airflow home (migrated DB, pool) whose connections reach the RBAC-enforcing sandbox."""
    env = make_airflow_env(tmp_path_factory.mktemp("reliability-airflow"), harness.box.env, metadata_db)
    yield env
    env.close()


OUTSIDE_RBAC = {
    "delete a Deployment": lambda k: k.apps_v1_client.delete_namespaced_deployment("kube-apiserver", ONE_NS),
    "update a Deployment (not through scale)": lambda k: k.apps_v1_client.patch_namespaced_deployment(
        "kube-apiserver", ONE_NS, {"metadata": {"labels": {"x": "y"}}}
    ),
    "delete an etcd pod": lambda k: k.core_v1_client.delete_namespaced_pod("etcd-0", ONE_NS),
    "list Secrets in every namespace": lambda k: k.core_v1_client.list_secret_for_all_namespaces(),
    "patch a Secret": lambda k: k.core_v1_client.patch_namespaced_secret(
        f"{ONE}-etcd-encryption-key", "clusters", {"data": {"key": "AAAA"}}
    ),
    "patch HostedCluster status": lambda k: k.custom_object_client.patch_namespaced_custom_object_status(
        "hypershift.openshift.io", "v1beta1", "clusters", "hostedclusters", ONE, {"status": {}}
    ),
    "delete a StatefulSet": lambda k: k.apps_v1_client.delete_namespaced_stateful_set("etcd", ONE_NS),
}


@pytest.mark.parametrize("what", list(OUTSIDE_RBAC))
def test_operation_outside_rbac_is_refused(harness: Harness, what: str) -> None:
    """The identity of include/rbac cannot do what the DAGs never do: 403, and nothing changed."""
    with pytest.raises(ApiException) as err:
        OUTSIDE_RBAC[what](harness.k8s)
    assert err.value.status == 403, err.value
    assert "forbidden" in str(err.value.body).lower()
    assert harness.k8s.get_deployment_replicas(ONE_NS, "kube-apiserver")[0] == 1


def admin_core(harness: Harness) -> client.CoreV1Api:
    """The sandbox's unrestricted client: to look at what the restricted identity may not see."""
    return client.CoreV1Api(config.new_client_from_config(str(harness.box.admin_kubeconfig)))


def _absent(read: Callable[..., Any], *args: str) -> None:
    with pytest.raises(ApiException) as err:
        read(*args)
    assert err.value.status == 404, err.value


def _api_pods(k: Any) -> str:
    pods = k.list_pods(ONE_NS, "app=kube-apiserver")
    assert pods, "no kube-apiserver pod to try"
    return pods[0].metadata.name


# What the restore and backup roles allowed before they were narrowed to per-namespace writes and
# named pods/Deployments, and no longer do. Each: (the attempt, the request it makes as
# "verb plural[/sub] namespace/name" in the request log, a check by the admin that nothing changed).
NARROWED: dict[str, tuple[Callable[[Any], Any], str, Callable[[client.CoreV1Api], Any] | None]] = {
    "read a control plane's etcd client Secret": (
        lambda k: k.core_v1_client.read_namespaced_secret("etcd-client-tls", ONE_NS),
        f"get secrets {ONE_NS}/etcd-client-tls",
        None,
    ),
    "delete a Secret in another namespace than the HostedClusters'": (
        lambda k: k.core_v1_client.delete_namespaced_secret("etcd-client-tls", ONE_NS),
        f"delete secrets {ONE_NS}/etcd-client-tls",
        lambda a: a.read_namespaced_secret("etcd-client-tls", ONE_NS),
    ),
    "create a Secret in another namespace": (
        lambda k: k.core_v1_client.create_namespaced_secret(ONE_NS, {"metadata": {"name": "probe"}}),
        f"create secrets {ONE_NS}/",
        lambda a: _absent(a.read_namespaced_secret, "probe", ONE_NS),
    ),
    "delete the namespace of the HostedClusters": (
        lambda k: k.core_v1_client.delete_namespace("clusters"),
        "delete namespaces /clusters",
        lambda a: a.read_namespace("clusters"),
    ),
    "create a Namespace": (
        lambda k: k.core_v1_client.create_namespace({"metadata": {"name": "rbac-probe"}}),
        "create namespaces /",
        lambda a: _absent(a.read_namespace, "rbac-probe"),
    ),
    "exec into a pod that is not an etcd member": (
        lambda k: k.exec_command(ONE_NS, _api_pods(k), ["true"], container="kube-apiserver", timeout=30),
        f"pods/exec {ONE_NS}/kube-apiserver-",  # a websocket exec is a GET: verb get
        None,
    ),
}


@pytest.mark.parametrize("what", list(NARROWED))
def test_operation_the_narrowed_rbac_no_longer_allows_is_refused(harness: Harness, what: str) -> None:
    """Writes only where HostedClusters live, exec only into etcd members, no Namespace writes: 403."""
    attempt, request, unchanged = NARROWED[what]
    seq = harness.seq()
    with pytest.raises(Exception) as err:  # exec reports the refused upgrade as its own error type
        attempt(harness.k8s)
    refused = [
        f"{i['verb']} {i['plural']}{'/' + i['subresource'] if i.get('subresource') else ''} "
        f"{i.get('namespace') or ''}/{i.get('name') or ''}"
        for i in harness.requests_since(seq)[0]
        if i["code"] == 403 and i.get("user") == "token"
    ]
    assert any(request in r for r in refused), (refused, err.value)
    if isinstance(err.value, ApiException):
        assert err.value.status == 403, err.value
    if unchanged is not None:
        unchanged(admin_core(harness))
    done = [w for w in harness.writes_since(seq) if not w.endswith("-> 403")]
    assert not done, done


def inject_after_quiesce(harness: Harness, seq: int, spec: dict[str, Any], done: threading.Event) -> None:
    """Inject ``spec`` once the run's quiesce has scaled a Deployment: preflight's S3 probe is over,
    and the next S3 requests are the upload's (snapshot, verify and resume use none)."""
    while not done.wait(0.2):
        items, _ = harness.requests_since(seq)
        if any(i["method"] == "PATCH" and i.get("subresource") == "scale" for i in items):
            harness.post_fault(spec)
            return


def test_whole_dag_upload_fails_for_good_cluster_given_back(harness: Harness, airflow: AirflowEnv) -> None:
    """``dag.test()`` of hcp_etcd_backup under include/rbac with S3 answering 503 to every upload try.

    The upload fails on all three tries; the teardowns (resume, cleanup, unpause) still run through
    the DAG's own trigger rules, no manifest is written, and the run fails (it must not look green).
    """
    before = harness.objects(ONE)
    seq = harness.seq()
    done = threading.Event()
    watcher = threading.Thread(
        target=inject_after_quiesce, args=(harness, seq, {"kind": "s3", "code": 503, "count": 60}, done)
    )
    watcher.start()
    try:
        run = airflow.run({"hosted_clusters": [f"clusters/{ONE}"]}, timeout=420)
    finally:
        done.set()
        watcher.join(timeout=30)
        harness.clear_s3_faults()
    refused = [i for i in harness.requests_since(seq)[0] if i["code"] == 403]
    assert not refused, f"include/rbac lacks what the DAG does: {refused}"
    assert run.state == "failed", run.tis
    assert run.state_of("backup.upload", 0) == "failed" and run.tries_of("backup.upload", 0) == 3, run.tis
    assert run.state_of("backup.publish_manifest", 0) == "upstream_failed", run.tis
    for teardown in ("resume", "cleanup", "unpause"):
        assert run.state_of(f"backup.{teardown}", 0) == "success", (teardown, run.tis)
    assert run.state_of("all_backups_succeeded") == "upstream_failed", run.tis
    harness.assert_invariants(ONE, before, None)
    assert not [k for k in harness.objects(ONE) if k not in before and k.endswith("/snapshot.db")]


# Secret data of rendered manifests that failed runs saw (the hygiene test searches for them too).
RENDERED_SECRETS: dict[str, bytes] = {}


def test_failed_restore_stores_no_secret_in_xcom(harness: Harness, tmp_path) -> None:
    """A rendered file broken on a Secret's data line (yaml's message quotes that line): the create is
    refused at its first try (bad input), and its error XCom, which the drill report copies and the
    metadata DB keeps in clear text, names the problem and its position, not the data (issue 12)."""
    rid, resolved = harness.prepare_restore(ONE, "xcom-redacted", tmp_path / "rendered.yaml")
    pull_secret = base64.b64encode(os.urandom(48)).decode()
    RENDERED_SECRETS["data of a Secret in a broken rendered file"] = pull_secret[:16].encode()
    broken = tmp_path / "broken.yaml"
    secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: p, namespace: clusters}\ndata:\n"
    rendered = (tmp_path / "rendered.yaml").read_text()
    broken.write_text(f"{rendered}\n---\n{secret}  .dockerconfigjson: {pull_secret}: x\n")
    seq = harness.seq()
    outcome = harness.attempt(
        "create",
        lambda: rops.CreateRestoredClusterOperator(
            **harness.restore_store("create"), backup=resolved, rendered_manifests=str(broken)
        ),
        rid,
    )
    assert not outcome.ok and outcome.tries == 1, outcome  # not retried: no retry fixes a file
    stored = harness.xcoms[rid][("create", "error")]
    assert "is not valid YAML" in stored and "line " in stored, stored
    assert pull_secret[:16] not in stored, stored
    assert harness.writes_since(seq) == [], "a refused create wrote something"


def _search(haystacks: dict[str, bytes], needles: dict[str, bytes]) -> list[str]:
    return [f"{n} in {h}" for h, text in haystacks.items() for n, needle in needles.items() if needle in text]


def test_secret_hygiene_after_all_runs(harness: Harness, airflow: AirflowEnv, figures: Figures) -> None:
    """The keys (raw, base64, hex), the S3 secret key and presigned-URL signatures appear nowhere:
    metadata DB (every table), task logs, Airflow's output, the in-process task logs, every command
    sent into a pod, the command lines of the processes the sandbox ran in pods, the request log."""
    assert airflow.logs and harness.logs and harness.exec_commands, "nothing ran before this test"
    box = harness.box
    haystacks: dict[str, bytes] = {
        "metadata DB": airflow.db_dump(),
        "Airflow task logs": airflow.log_files(),
        "Airflow process output": "\n".join(airflow.logs).encode(),
        "in-process task logs": "\n".join(harness.logs).encode(),
        "commands sent into pods": "\n".join(" ".join(c) for c in harness.exec_commands).encode(),
        "pod process command lines": "\n".join(sorted(harness.pod_cmdlines)).encode(),
        "sandbox request log": (box.dir / "logs" / "requests.jsonl").read_bytes(),
        "XCom values of the in-process runs": json.dumps(
            {run: {"/".join(k): v for k, v in store.items()} for run, store in harness.xcoms.items()},
            default=str,
        ).encode(),
    }
    # Positive controls: the haystacks hold what the runs did (a search of empty text proves nothing).
    assert f"preflight of clusters/{ONE} passed".encode() in haystacks["in-process task logs"]
    assert (
        b"hcp_etcd_backup" in haystacks["metadata DB"]
        and b"snapshot save" in haystacks["commands sent into pods"]
    )
    assert b'"create/error"' in haystacks["XCom values of the in-process runs"], "no failed run's XCom"
    needles = {**harness.key_needles(), **harness.sa_key_needles(), **RENDERED_SECRETS}
    assert len(needles) >= 2 * 4 + 2 * 3 + 2, sorted(
        needles
    )  # two clusters' keys in four encodings, S3 key, signature
    hits = _search(haystacks, needles)
    figures.secret_hits, figures.secret_needles, figures.secret_haystacks = (
        len(hits),
        len(needles),
        len(haystacks),
    )
    assert not hits, hits
    assert harness.pod_cmdlines, "the command-line sampler saw no pod process"
    assert any("etcdctl" in c for c in harness.pod_cmdlines)
