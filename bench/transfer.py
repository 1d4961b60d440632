"""Transfers measured in a process of their own (``python -m bench.transfer``): time and peak RSS.

A worker's memory is what this process holds: RSS after the imports and clients are ready is the
base, the peak (``ru_maxrss``) after the transfer minus that base is the growth of the transfer.
Prints one JSON object per transfer on stdout.

Methods: ``boto3`` (``upload_file`` of the pod's file from the host, the baseline), ``stream`` and
``presigned-curl`` (``SnapshotToS3Operator`` as the backup DAG runs it).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import Sandbox


def rss_mib() -> float:
    """Current resident set size of this process in MiB (Linux)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far in MiB (Linux: ru_maxrss is KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def transfer(box: Sandbox, cluster: str, method: str, rep: int) -> dict[str, Any]:
    """Upload the pod's snapshot file once by ``method``; the object is deleted afterwards.

    :param box: the sandbox (its environment exported).
    :param cluster: the HostedCluster whose ``etcd-0`` holds the file.
    :param method: ``boto3``, ``stream`` or ``presigned-curl``.
    :param rep: repetition number (part of the key).
    """
    from hcp_etcd.hooks.snapshot_store import SnapshotStoreHook
    from hcp_etcd.operators.transfer import SnapshotToS3Operator

    bucket = box.env["HCP_ETCD_BUCKET"]
    member = box.members(cluster)[0]
    hook = SnapshotStoreHook()
    ts = f"20250101T{rep:06d}Z"
    key = f"bench/clusters/{cluster}/{ts}/snapshot.db"
    started = time.monotonic()
    if method == "boto3":
        hook.get_conn().upload_file(str(member.snapshot_file), bucket, key)
    else:
        op = SnapshotToS3Operator(
            task_id="upload",
            hosted_cluster=f"clusters/{cluster}",
            bucket=bucket,
            prefix="bench",
            snapshot={"ts": ts},
            verify={"canonical": member.pod},
            method=method,
            fallback_to_stream=False,
        )
        result = op.execute({})  # type: ignore[arg-type]
        key = result["key"]
    seconds = time.monotonic() - started
    size = hook.object_size(bucket, key)
    hook.delete_objects(bucket, [key])
    return {"method": method, "seconds": seconds, "size": size}


def main(argv: list[str] | None = None) -> int:
    """Run the transfers asked for; one JSON line each.

    :param argv: arguments (see ``--help``).
    """
    parser = argparse.ArgumentParser(prog="python -m bench.transfer")
    parser.add_argument("--sandbox", required=True, type=Path)
    parser.add_argument("--cluster", required=True)
    parser.add_argument("--methods", default="boto3,stream,presigned-curl")
    parser.add_argument("--reps", type=int, default=1)
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    box = Sandbox(args.sandbox)
    box.env = {}
    for line in (args.sandbox / "airflow.env").read_text().splitlines():
        key, _, value = line.partition("=")
        box.env[key] = value.strip("'")
    box.export()
    box.refresh()
    # Warm up: imports, connection lookups and the first TLS handshakes are not the transfer.
    from hcp_etcd.hooks.hosted_cluster import HostedClusterHook
    from hcp_etcd.hooks.snapshot_store import SnapshotStoreHook

    SnapshotStoreHook().object_size(box.env["HCP_ETCD_BUCKET"], "bench/warmup")
    HostedClusterHook().list_etcd_pods(f"clusters-{args.cluster}")
    base = rss_mib()
    for rep in range(args.reps):
        for method in args.methods.split(","):
            out = transfer(box, args.cluster, method, rep)
            out.update(rss_base_mib=base, rss_peak_mib=peak_rss_mib())
            print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
