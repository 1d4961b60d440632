"""The six figures of issue 7, each against a baseline measured in the same run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from bench.airflow_run import Airflow, free_port
from bench.common import DAGS, GiB, Member, MiB, Sandbox, log, median, python_env, run_timed

BACKUP_PREFIX = "hcp-etcd/backups"


@dataclass
class Figure:
    """One printed line: a project figure, its baseline, and how it compares with the target.

    :param number: issue 7's number of the figure.
    :param name: what is measured.
    :param value: the compared figure (a difference in seconds, a ratio, MiB ...).
    :param unit: its unit.
    :param target: the target as text.
    :param met: whether the target is met.
    :param detail: the raw measurements behind it.
    """

    number: int
    name: str
    value: float
    unit: str
    target: str
    met: bool
    detail: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        """The one printed line."""
        shown = ", ".join(f"{k}={_fmt(v)}" for k, v in self.detail.items() if not isinstance(v, list))
        verdict = "ok" if self.met else "MISS"
        head = f"[{self.number}] {self.name}: {self.value:.2f} {self.unit}"
        return f"{head} (target {self.target}: {verdict}) {shown}"


def _fmt(v: Any) -> str:
    return f"{v:.2f}" if isinstance(v, float) else str(v)


# ---- 1. API downtime ---------------------------------------------------------------------------------


def newest_manifest(cluster: str) -> dict[str, Any]:
    """The newest ``manifest.json`` of a sandbox cluster (the connections are exported).

    :param cluster: the HostedCluster name in ``clusters``.
    """
    from hcp_etcd.hooks.snapshot_store import SnapshotStoreHook

    s3 = SnapshotStoreHook()
    bucket = os.environ["HCP_ETCD_BUCKET"]
    keys = sorted(
        o.key
        for o in s3.list_objects(bucket, f"{BACKUP_PREFIX}/clusters/{cluster}/")
        if o.key.endswith("/manifest.json")
    )
    if not keys:
        raise RuntimeError(f"no manifest for {cluster}")
    return s3.get_json(bucket, keys[-1])


def raw_snapshot_save(member: Member, workdir: Path) -> float:
    """Seconds of ``etcdctl snapshot save`` of ``member`` to a local file (removed after).

    :param member: the etcd member.
    :param workdir: where the file goes.
    """
    target = workdir / f"raw-{member.pod}.db"
    seconds = run_timed(member.etcdctl("snapshot", "save", str(target)))
    target.unlink(missing_ok=True)
    return seconds


def downtime(
    af: Airflow, box: Sandbox, cluster: str, label: str, reps: int, workdir: Path, run_tag: str
) -> Figure:
    """Quiesced backups under the scheduler: ``api_downtime_seconds`` - raw snapshot save.

    :param af: the running Airflow.
    :param box: the sandbox.
    :param cluster: a one-member hosted cluster holding the data.
    :param label: the data size as text.
    :param reps: backups to run.
    :param workdir: scratch space.
    :param run_tag: makes run ids unique.
    """
    member = box.members(cluster)[0]
    downs, raws, runs = [], [], []
    windows: list[dict[str, float]] = []
    for i in range(reps):
        result = af.run(
            "hcp_etcd_backup",
            {"hosted_clusters": [f"clusters/{cluster}"], "mode": "quiesced"},
            f"bench-{run_tag}-{cluster}-q{i}",
        )
        manifest = newest_manifest(cluster)
        downs.append(float(manifest["api_downtime_seconds"]))
        runs.append(result["seconds"])
        raws.append(raw_snapshot_save(member, workdir))
        windows.append(_window(result["tasks"]))
        log(f"{cluster}: downtime {downs[-1]:.2f}s, raw snapshot save {raws[-1]:.2f}s, tasks {windows[-1]}")
    overhead = median([d - r for d, r in zip(downs, raws, strict=True)])
    return Figure(
        1,
        f"API downtime overhead, quiesced, {label}",
        overhead,
        "s",
        "<= 5 s",
        overhead <= 5,
        {
            "downtime_s": median(downs),
            "etcdctl_save_s": median(raws),
            "run_s": median(runs),
            "n": reps,
            "downtimes": downs,
            "raws": raws,
            "windows": windows,
        },
    )


def _window(tasks: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Where the downtime went: each task of the window and the hand-offs between them, in seconds.

    :param tasks: the run's task instances (``Airflow.wait``).
    """
    order = ["backup.quiesce[0]", "backup.snapshot[0]", "backup.resume[0]"]
    spans = [(tasks[t]["start"], tasks[t]["end"]) for t in order if t in tasks]
    if len(spans) != len(order) or any(a is None or b is None for a, b in spans):
        return {}
    (q0, q1), (s0, s1), (r0, r1) = spans
    return {
        "quiesce": round((q1 - q0).total_seconds(), 2),
        "handoff_1": round((s0 - q1).total_seconds(), 2),
        "snapshot": round((s1 - s0).total_seconds(), 2),
        "handoff_2": round((r0 - s1).total_seconds(), 2),
        "resume": round((r1 - r0).total_seconds(), 2),
    }


def raw_parallel_snapshot_save(members: list[Member], workdir: Path) -> float:
    """Seconds until ``etcdctl snapshot save`` of every member, all started at once, has finished:
    what etcd itself costs for an HA cluster's snapshots on this machine (files removed after).

    :param members: the etcd members.
    :param workdir: where the files go.
    """
    targets = [workdir / f"raw-parallel-{m.pod}.db" for m in members]
    started = time.monotonic()
    procs = [
        subprocess.Popen(
            m.etcdctl("snapshot", "save", str(t)), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        for m, t in zip(members, targets, strict=True)
    ]
    failed = [p for p in procs if p.wait(timeout=600) != 0]
    elapsed = time.monotonic() - started
    for target in targets:
        target.unlink(missing_ok=True)
    if failed:
        raise RuntimeError(
            f"etcdctl snapshot save failed: {failed[0].stderr.read()[-500:] if failed[0].stderr else ''}"
        )
    return elapsed


def downtime_ha(
    af: Airflow, box: Sandbox, lone: str, ha: str, label: str, pairs: int, workdir: Path, run_tag: str
) -> Figure:
    """Quiesced backups of a three-member and a one-member cluster holding the same data, alternated
    (one pair after the other, so that the machine's noise falls on both): the ratio of their median
    ``api_downtime_seconds``, next to the same ratio for raw ``etcdctl snapshot save`` (every member
    of the HA cluster at once against the lone member), measured right after each pair: on 2 cores,
    three members writing their snapshots at once take longer than one whatever the DAG does.

    :param af: the running Airflow.
    :param box: the sandbox.
    :param lone: the one-member hosted cluster.
    :param ha: the three-member hosted cluster.
    :param label: the data size as text.
    :param pairs: backups of each.
    :param workdir: scratch space.
    :param run_tag: makes run ids unique.
    """
    downs: dict[str, list[float]] = {lone: [], ha: []}
    raws: dict[str, list[float]] = {lone: [], ha: []}
    windows: dict[str, list[dict[str, float]]] = {lone: [], ha: []}
    for i in range(pairs):
        for cluster in (ha, lone) if i % 2 else (lone, ha):
            result = af.run(
                "hcp_etcd_backup",
                {"hosted_clusters": [f"clusters/{cluster}"], "mode": "quiesced"},
                f"bench-{run_tag}-{cluster}-pair{i}",
            )
            downs[cluster].append(float(newest_manifest(cluster)["api_downtime_seconds"]))
            windows[cluster].append(_window(result["tasks"]))
            log(f"{cluster}: downtime {downs[cluster][-1]:.2f}s, tasks {windows[cluster][-1]}")
        raws[lone].append(raw_snapshot_save(box.members(lone)[0], workdir))
        raws[ha].append(raw_parallel_snapshot_save(box.members(ha), workdir))
        log(
            f"raw snapshot save: {lone} {raws[lone][-1]:.2f}s, "
            f"every member of {ha} at once {raws[ha][-1]:.2f}s"
        )
    ratio = median(downs[ha]) / median(downs[lone])
    raw_ratio = median(raws[ha]) / median(raws[lone])
    return Figure(
        1,
        f"API downtime, 3 members / 1 member, quiesced, {label}",
        ratio,
        "x",
        "<= 1.2",
        ratio <= 1.2,
        {
            "ha_downtime_s": median(downs[ha]),
            "one_member_downtime_s": median(downs[lone]),
            "n": pairs,
            "ha_downtimes": downs[ha],
            "one_member_downtimes": downs[lone],
            "raw_ratio": raw_ratio,
            "ha_raw_s": median(raws[ha]),
            "one_member_raw_s": median(raws[lone]),
            "ha_windows": windows[ha],
            "one_member_windows": windows[lone],
        },
    )


def downtime_online(af: Airflow, cluster: str, run_tag: str) -> Figure:
    """One online backup: its manifest must report no downtime.

    :param af: the running Airflow.
    :param cluster: the hosted cluster.
    :param run_tag: makes run ids unique.
    """
    result = af.run(
        "hcp_etcd_backup",
        {"hosted_clusters": [f"clusters/{cluster}"], "mode": "online"},
        f"bench-{run_tag}-{cluster}-online",
    )
    value = newest_manifest(cluster).get("api_downtime_seconds") or 0.0
    return Figure(
        1, "API downtime, online", float(value), "s", "0 s", value == 0, {"run_s": result["seconds"]}
    )


# ---- 2./3. transfer ----------------------------------------------------------------------------------


def run_transfers(box: Sandbox, cluster: str, methods: list[str], reps: int) -> list[dict[str, Any]]:
    """``python -m bench.transfer`` in a process of its own; its JSON results.

    :param box: the sandbox.
    :param cluster: the cluster whose ``etcd-0`` holds the file.
    :param methods: methods in order (each rep runs them all, interleaved).
    :param reps: repetitions.
    """
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.transfer",
            "--sandbox",
            str(box.dir),
            "--cluster",
            cluster,
            "--methods",
            ",".join(methods),
            "--reps",
            str(reps),
        ],
        capture_output=True,
        text=True,
        env=python_env(),
        timeout=3600,
        check=False,
    )
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith('{"method"')]
    if proc.returncode != 0 or len(results) != len(methods) * reps:
        raise RuntimeError(f"bench.transfer failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return results


def throughput(box: Sandbox, cluster: str, size: int, reps: int) -> list[Figure]:
    """Each method's time against boto3 ``upload_file`` of the same file (ratio of throughputs).

    :param box: the sandbox.
    :param cluster: a hosted cluster for the file.
    :param size: bytes of the snapshot file.
    :param reps: repetitions (interleaved).
    """
    from bench.common import write_random_file

    member = box.members(cluster)[0]
    write_random_file(member.snapshot_file, size)
    results = run_transfers(box, cluster, ["boto3", "stream", "presigned-curl"], reps)
    member.snapshot_file.unlink(missing_ok=True)
    times: dict[str, list[float]] = {}
    for r in results:
        times.setdefault(r["method"], []).append(r["seconds"])
    base = median(times["boto3"])
    figures = []
    for method in ("stream", "presigned-curl"):
        ratio = base / median(times[method])
        figures.append(
            Figure(
                2,
                f"upload throughput {method} vs boto3 upload_file, {size // MiB} MiB",
                ratio,
                "x",
                ">= 0.9",
                ratio >= 0.9,
                {
                    "MiB_s": size / MiB / median(times[method]),
                    "boto3_MiB_s": size / MiB / base,
                    "s": median(times[method]),
                    "boto3_s": base,
                    "n": reps,
                    "times": times[method],
                    "boto3_times": times["boto3"],
                },
            )
        )
    return figures


def memory(box: Sandbox, cluster: str, sizes: list[int]) -> list[Figure]:
    """Peak RSS growth of the worker during each method's transfer, per size (own process each).

    :param box: the sandbox.
    :param cluster: a hosted cluster for the file.
    :param sizes: snapshot sizes in bytes (small first).
    """
    from bench.common import write_random_file

    member = box.members(cluster)[0]
    growth: dict[str, dict[int, float]] = {"stream": {}, "presigned-curl": {}, "boto3": {}}
    for size in sizes:
        write_random_file(member.snapshot_file, size)
        for method in growth:
            if method == "boto3" and size != sizes[0]:
                continue  # the reference: upload_file of the smallest file only
            (r,) = run_transfers(box, cluster, [method], 1)
            growth[method][size] = r["rss_peak_mib"] - r["rss_base_mib"]
            log(
                f"RSS growth {method} {size // MiB} MiB: {growth[method][size]:.1f} MiB "
                f"in {r['seconds']:.1f}s"
            )
        member.snapshot_file.unlink(missing_ok=True)
    figures = []
    small, big = sizes[0], sizes[-1]
    for method in ("stream", "presigned-curl"):
        worst = max(growth[method].values())
        slope = growth[method][big] - growth[method][small]
        figures.append(
            Figure(
                3,
                f"worker peak RSS growth, {method}, {small // MiB} and {big // MiB} MiB",
                worst,
                "MiB",
                "<= 100 MiB, no growth with size",
                worst <= 100 and slope <= 16,
                {f"{s // MiB}MiB": growth[method][s] for s in sizes}
                | {"growth_with_size_MiB": slope, "boto3_upload_file_small": growth["boto3"][small]},
            )
        )
    return figures


# ---- 4. fleet ----------------------------------------------------------------------------------------


def fleet(af: Airflow, clusters: list[str], pool: int, run_tag: str) -> list[Figure]:
    """One cluster's run, then all ``clusters`` in one run: ideal/actual with ``pool`` slots, and the
    worst API downtime of the fleet's clusters against the lone cluster's.

    :param af: the running Airflow (pool ``hcp_etcd_backup`` has ``pool`` slots).
    :param clusters: hosted cluster names (same data size each).
    :param pool: the pool's slots.
    :param run_tag: makes run ids unique.
    """
    one = af.run("hcp_etcd_backup", {"hosted_clusters": [f"clusters/{clusters[0]}"]}, f"bench-{run_tag}-one")
    lone_downtime = float(newest_manifest(clusters[0])["api_downtime_seconds"])
    many = af.run(
        "hcp_etcd_backup",
        {"hosted_clusters": [f"clusters/{c}" for c in clusters]},
        f"bench-{run_tag}-fleet",
        timeout=1800,
    )
    waves = -(-len(clusters) // pool)
    efficiency = waves * one["seconds"] / many["seconds"]
    # Issue 15: a quiesced cluster must not wait behind the others' work (weights, default_pool).
    downtimes = {c: float(newest_manifest(c)["api_downtime_seconds"]) for c in clusters}
    worst = max(downtimes.values()) / lone_downtime
    return [
        Figure(
            4,
            f"fleet efficiency, {len(clusters)} clusters, pool {pool}",
            efficiency,
            "x",
            ">= 0.75",
            efficiency >= 0.75,
            {"fleet_s": many["seconds"], "one_cluster_s": one["seconds"], "ideal_s": waves * one["seconds"]},
        ),
        Figure(
            4,
            f"fleet API downtime, worst of {len(clusters)} / a lone cluster's",
            worst,
            "x",
            "<= 1.5",
            worst <= 1.5,
            {
                "worst_s": max(downtimes.values()),
                "median_s": median(list(downtimes.values())),
                "lone_s": lone_downtime,
                "downtimes": [downtimes[c] for c in clusters],
            },
        ),
    ]


# ---- 5. restore --------------------------------------------------------------------------------------


def raw_restore(snapshot: Path, workdir: Path) -> float:
    """``etcdutl snapshot restore`` + an etcd member started on it until ``/health`` is true.

    :param snapshot: the snapshot file.
    :param workdir: scratch space.
    """
    from hcp_sandbox.etcd import binary

    data = workdir / "raw-restore"
    shutil.rmtree(data, ignore_errors=True)
    client, peer = free_port(), free_port()
    peer_url, client_url = f"http://127.0.0.1:{peer}", f"http://127.0.0.1:{client}"
    started = time.monotonic()
    run_timed(
        [
            binary("etcdutl"),
            "snapshot",
            "restore",
            str(snapshot),
            "--data-dir",
            str(data),
            "--name",
            "raw",
            "--initial-cluster",
            f"raw={peer_url}",
            "--initial-advertise-peer-urls",
            peer_url,
        ]
    )
    proc = subprocess.Popen(
        [
            binary("etcd"),
            "--name",
            "raw",
            "--data-dir",
            str(data),
            "--listen-client-urls",
            client_url,
            "--advertise-client-urls",
            client_url,
            "--listen-peer-urls",
            peer_url,
            "--initial-advertise-peer-urls",
            peer_url,
            "--initial-cluster",
            f"raw={peer_url}",
            "--quota-backend-bytes",
            str(8 * GiB),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while True:
            try:
                with urllib.request.urlopen(client_url + "/health", timeout=2) as resp:
                    if json.loads(resp.read()).get("health") == "true":
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() - started > 300:
                raise RuntimeError("raw etcd member did not become healthy")
            time.sleep(0.05)
        return time.monotonic() - started
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        shutil.rmtree(data, ignore_errors=True)


def restore(
    af: Airflow, box: Sandbox, source: str, target: str, workdir: Path, run_tag: str, reps: int
) -> Figure:
    """The restore DAG's create -> Available against a raw restore of the same snapshot.

    :param af: the running Airflow.
    :param box: the sandbox.
    :param source: the backed-up cluster (its newest backup is restored).
    :param target: name of the new hosted cluster.
    :param workdir: scratch space.
    :param run_tag: makes run ids unique.
    :param reps: raw restores.
    """
    from hcp_etcd.hooks.snapshot_store import SnapshotStoreHook

    manifest = newest_manifest(source)
    snapshot = workdir / "restore-source.db"
    started = time.monotonic()
    # One streamed GET: boto3's download_fileobj splits it into ranged GETs, which moto serves by
    # reading the whole object for each range (minutes for 1 GiB, none of it measured).
    body = SnapshotStoreHook().client.get_object(
        Bucket=os.environ["HCP_ETCD_BUCKET"], Key=manifest["snapshot"]["key"]
    )["Body"]
    with snapshot.open("wb") as out:
        shutil.copyfileobj(body, out, 8 * MiB)
    log(f"downloaded the snapshot to restore in {time.monotonic() - started:.1f}s")
    rendered = workdir / f"{target}.yaml"
    rendered.write_text(box.cli("render", "--dir", str(box.dir), "--name", target, "--members", "1"))
    result = af.run(
        "hcp_etcd_restore",
        {"source": f"clusters/{source}", "target_name": target, "rendered_manifests": str(rendered)},
        f"bench-{run_tag}-restore-{target}",
        timeout=1800,
    )
    tasks = result["tasks"]
    project = (tasks["wait_restored[-1]"]["end"] - tasks["create[-1]"]["start"]).total_seconds()
    raws = [raw_restore(snapshot, workdir) for _ in range(reps)]
    snapshot.unlink(missing_ok=True)
    overhead = project - median(raws)
    return Figure(
        5,
        f"restore overhead, create->Available vs etcdutl restore + member start, "
        f"{manifest['snapshot']['size_bytes'] // MiB} MiB",
        overhead,
        "s",
        "<= 10 s",
        overhead <= 10,
        {"create_to_available_s": project, "raw_s": median(raws), "run_s": result["seconds"], "raw_n": reps},
    )


# ---- 6. DAG parse ------------------------------------------------------------------------------------

MINIMAL_DAG = """
from datetime import datetime
from airflow.sdk import dag, task

@dag(schedule=None, start_date=datetime(2025, 1, 1))
def minimal():
    @task
    def hello():
        return 1
    hello()

minimal()
"""

# What the dag-processor does with a file, and so what the probe times (Airflow's
# dag_processing/manager.py and processor.py): the manager, which has imported the parsing code
# (processor.py, the serializer, the timetables), calls gc.freeze() ("to prevent COW") and forks one
# process per file; the fork imports the file (DagBag) and serializes every DAG it defines
# (`_serialize_dags`: `DagSerialization.to_dict`), which it sends to the manager. The probe's parent
# imports what the manager has imported, freezes the GC and forks once per parse of the minimal DAG
# file and of the file under test; each fork imports its file and serializes its DAGs. It also forks
# the pairs before the freeze ("no-freeze"): the first figures were measured without it. One parent
# serves every file, as one dag-processor parses them all. Each file's first pair is a warm-up (it
# writes the bytecode later forks read) and is not reported.
PARSE_PROBE = r"""
import gc, importlib.util, json, os, sys, time
import airflow.dag_processing.manager, airflow.sdk  # what the dag-processor has imported when it forks
from airflow.serialization.serialized_objects import DagSerialization
reps, minimal_path, dag_paths = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
def load_in_fork(path, name):
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        # The DAGs it defines: those it holds and those its @dag calls register (as the DagBag sets up).
        from airflow.sdk.definitions._internal.contextmanager import DagContext
        DagContext.current_autoregister_module_name = name
        t = time.perf_counter()
        spec = importlib.util.spec_from_file_location(name, path)
        module = sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        imported = time.perf_counter() - t
        found = {id(v): v for v in vars(module).values() if isinstance(v, airflow.sdk.DAG)}
        found.update({id(d): d for d, _ in DagContext.autoregistered_dags})
        for dag in found.values():
            DagSerialization.to_dict(dag)
        parsed = time.perf_counter() - t
        os.write(write, json.dumps([imported, parsed, len(found)]).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        imported, parsed, dags = json.loads(f.read())
    os.waitpid(pid, 0)
    DAGS[name] = dags
    return {"import": imported, "parse": parsed}
DAGS = {}
def pairs(dag_path, n):
    return [(load_in_fork(minimal_path, "minimal"), load_in_fork(dag_path, "dag")) for _ in range(n)]
found = {path: {} for path in dag_paths}
for path in dag_paths:
    pairs(path, 1)
    found[path]["no-freeze"] = pairs(path, reps)
gc.freeze()
for path in dag_paths:
    found[path]["freeze"] = pairs(path, reps)
    found[path]["dags"] = DAGS["dag"]
print(json.dumps(found))
"""


def _parse_ratios(data: dict[str, Any], mode: str, phase: str) -> list[float]:
    """Each pair's time of the file per DAG over the minimal DAG's (the dag-processor parses a file
    once for all the DAGs it defines)."""
    dags = max(data["dags"], 1)
    return [dag[phase] / dags / mini[phase] for mini, dag in data[mode]]


def dag_parse(workdir: Path, reps: int, env: dict[str, str]) -> list[Figure]:
    """Parse time (import and serialization) of each DAG file vs a minimal DAG, each in a fork of
    one interpreter (as the dag-processor parses), ``reps`` times.

    :param workdir: scratch space.
    :param reps: pairs of forks per DAG file and GC mode.
    :param env: environment of a worker (connections etc.).
    """
    minimal = workdir / "minimal_dag.py"
    minimal.write_text(MINIMAL_DAG)
    child_env = python_env(env)
    # A dag-processor reads the bytecode it wrote on its first parse; PYTHONDONTWRITEBYTECODE (set on
    # some machines) would make every parse compile the project's modules again. Bytecode goes to the
    # scratch directory.
    child_env.pop("PYTHONDONTWRITEBYTECODE", None)
    child_env["PYTHONPYCACHEPREFIX"] = str(workdir / "pycache")
    figures = []
    dag_files = sorted(DAGS.glob("hcp_etcd_*.py"))
    # One parent for every file (as one dag-processor parses them all): it imports Airflow once.
    out = subprocess.run(
        [sys.executable, "-c", PARSE_PROBE, str(reps), str(minimal), *map(str, dag_files)],
        capture_output=True,
        text=True,
        env=child_env,
        timeout=600,
        check=True,
    ).stdout
    found = json.loads(out.strip().splitlines()[-1])
    for dag_file in dag_files:
        data = found[str(dag_file)]
        ratios = partial(_parse_ratios, data)
        ratio = median(ratios("freeze", "parse"))
        figures.append(
            Figure(
                6,
                f"DAG parse (import + serialization) {dag_file.name}, per DAG, vs minimal DAG",
                ratio,
                "x",
                "<= 1.3",
                ratio <= 1.3,
                {
                    "dag_s": median([dag["parse"] for _, dag in data["freeze"]]),
                    "minimal_s": median([mini["parse"] for mini, _ in data["freeze"]]),
                    "dag_import_s": median([dag["import"] for _, dag in data["freeze"]]),
                    "minimal_import_s": median([mini["import"] for mini, _ in data["freeze"]]),
                    "import_ratio_per_dag": median(ratios("freeze", "import")),
                    "ratio_without_gc_freeze": median(ratios("no-freeze", "parse")),
                    # A file may define several DAGs (the backup file: the quiesced and the online one,
                    # from one definition).
                    "dags_in_file": data["dags"],
                    "n": reps,
                    "ratios": ratios("freeze", "parse"),
                },
            )
        )
    return figures


def scratch() -> Path:
    """A scratch directory for one bench run."""
    return Path(tempfile.mkdtemp(prefix="hcp-etcd-bench-"))
