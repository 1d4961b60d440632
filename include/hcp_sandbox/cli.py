"""``python -m hcp_sandbox``: up, down, status, render, fault (and the internal serve).

See ``include/hcp_sandbox/README.md`` for what each command does and the files it writes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from hcp_sandbox import render
from hcp_sandbox.client import SandboxClient
from hcp_sandbox.layout import (
    DEFAULT_BUCKET,
    ENCRYPTION_TYPES,
    ETCD_INIT_VARIANTS,
    HOSTED_CLUSTER_NAMESPACE,
    SandboxPaths,
    read_info,
)

_LOG_TAIL_LINES = 40


# -- process helpers ---------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for a reaper counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _ours(pid: int, root: Path) -> bool:
    """Whether ``pid`` is one of this sandbox's processes (guards against reused pids)."""
    try:
        return str(root) in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace"
        )
    except OSError:
        return False


def _unrecorded_children(root: Path) -> list[int]:
    """Processes the sandbox in ``root`` started (its S3 servers and etcd members), found by ``/proc``:
    their command lines name ``root`` and the program. Not this process (``up``/``down`` name it too)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if (
            int(proc.name) != os.getpid()
            and str(root) in cmdline
            and ("-m hcp_sandbox.s3 " in cmdline or " --name=etcd-" in cmdline)
        ):
            found.append(int(proc.name))
    return found


def _recorded_pids(info: dict[str, Any] | None) -> list[int]:
    if not info:
        return []
    pids = info.get("pids", {})
    found = [pids.get("serve"), pids.get("s3"), pids.get("s3_replica"), *pids.get("etcd", [])]
    for hc in (info.get("hosted_clusters") or {}).values():
        found += [m.get("pid") for m in hc.get("etcd", [])]
    return sorted({p for p in found if isinstance(p, int)})


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in pids if _alive(p)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def stop_processes(paths: SandboxPaths, serve_pid: int | None = None, timeout: float = 20.0) -> list[int]:
    """Stop the serve process (it stops its children), then any recorded pid left: TERM, then KILL.

    Returns the pids still alive afterwards (empty on success).
    """
    info = read_info(paths)
    serve = serve_pid or (info or {}).get("pids", {}).get("serve")
    if serve and _alive(serve) and _ours(serve, paths.root):
        os.kill(serve, signal.SIGTERM)
        _wait_gone([serve], timeout)
    # Re-read: the serve process rewrites the file as it stops things. Then the sandbox's children
    # that no file records: a serve process stopped (or killed, when it took too long) while it
    # started them, e.g. the S3 server, whose pid is recorded once it listens.
    recorded = set(_recorded_pids(read_info(paths)) + _recorded_pids(info) + [serve or 0])
    pids = [
        p
        for p in recorded | set(_unrecorded_children(paths.root))
        if p and _alive(p) and _ours(p, paths.root)
    ]
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        pids = _wait_gone(pids, wait)
        if not pids:
            break
    return pids


def _log_tail(paths: SandboxPaths) -> str:
    try:
        lines = paths.log.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(lines[-_LOG_TAIL_LINES:])


# -- commands ----------------------------------------------------------------------------------


def cmd_up(args: argparse.Namespace) -> int:
    """Start ``serve`` detached and wait until it reports ready."""
    paths = SandboxPaths.of(args.dir)
    paths.root.mkdir(parents=True, exist_ok=True)
    info = read_info(paths)
    serve = (info or {}).get("pids", {}).get("serve")
    if serve and _alive(serve) and _ours(serve, paths.root):
        print(f"a sandbox already runs in {paths.root} (pid {serve}): run `down` first", file=sys.stderr)
        return 1
    # Nothing survives a sandbox (S3 lives in memory): old volumes would hold members of a cluster
    # whose peers listened on other ports, and never reach quorum.
    for stale_dir in (paths.root / "pods", paths.pki, paths.shims, paths.logs):
        shutil.rmtree(stale_dir, ignore_errors=True)
    for stale in (
        paths.info,
        paths.kubeconfig,
        paths.airflow_env,
        paths.s3_faults,
        paths.s3_replica_faults,
        paths.log,
    ):
        stale.unlink(missing_ok=True)
    argv = [
        sys.executable,
        "-m",
        "hcp_sandbox",
        "serve",
        "--dir",
        str(paths.root),
        "--seed-mb",
        str(args.seed_mb),
        "--bucket",
        args.bucket,
        "--pod-ready-delay",
        str(args.pod_ready_delay),
        "--compaction-interval",
        str(args.compaction_interval),
        "--event-ttl",
        str(args.event_ttl),
        "--writes-per-second",
        str(args.writes_per_second),
        "--etcd-init",
        args.etcd_init,
    ]
    for spec in cluster_specs(args):
        argv += ["--cluster", str(spec)]
    for rbac in args.rbac:
        argv += ["--rbac", str(Path(rbac).resolve())]
    if args.replica_s3:
        argv.append("--replica-s3")
    env = dict(os.environ)
    package_parent = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")]))
    started = time.monotonic()
    with open(paths.log, "ab") as log_file:
        # A session of its own: `up` returns, the sandbox stays (and a Ctrl-C here doesn't reach it).
        proc = subprocess.Popen(
            argv,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=paths.root,
            start_new_session=True,
        )
    deadline = started + args.timeout
    while True:
        info = read_info(paths)
        if info and info.get("ready"):
            break
        problem = None
        if info and info.get("error"):
            problem = info["error"]
        elif proc.poll() is not None:
            problem = f"the sandbox process exited with code {proc.returncode}"
        elif time.monotonic() > deadline:
            problem = f"the sandbox was not ready after {args.timeout:.0f}s"
        if problem:
            left = stop_processes(paths, proc.pid, timeout=10)
            print(f"hcp_sandbox up failed: {problem}", file=sys.stderr)
            print(f"--- last lines of {paths.log} ---\n{_log_tail(paths)}", file=sys.stderr)
            if left:
                print(f"processes still running: {left}", file=sys.stderr)
            return 1
        time.sleep(0.2)
    clusters = ", ".join(f"{n} ({hc['members']})" for n, hc in info.get("hosted_clusters", {}).items())
    print(
        f"sandbox ready in {time.monotonic() - started:.1f}s: API {info['api']['url']}, "
        f"S3 {info['s3']['url']}, bucket {info['bucket']}, hosted clusters: {clusters}"
    )
    print(f"kubeconfig: {paths.kubeconfig}\nairflow env: {paths.airflow_env}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    paths = SandboxPaths.of(args.dir)
    info = read_info(paths)
    if info is None:
        print(f"no sandbox in {paths.root}")
        return 0
    left = stop_processes(paths)
    if left:
        print(f"could not stop: {left}", file=sys.stderr)
        return 1
    print(f"sandbox in {paths.root} stopped")
    return 0


def _https(
    paths: SandboxPaths, info: dict[str, Any], method: str, path: str, body: Any = None, timeout: float = 10.0
) -> tuple[int, Any]:
    """Call the sandbox API with its token; returns (HTTP status, decoded JSON)."""
    return SandboxClient(info["api"]["url"], info["token"], paths.ca_crt).request(method, path, body, timeout)


def cmd_status(args: argparse.Namespace) -> int:
    paths = SandboxPaths.of(args.dir)
    info = read_info(paths)
    if not info or not info.get("ready"):
        print(
            f"no running sandbox in {paths.root}"
            + (f": {info.get('error')}" if info and info.get("error") else "")
        )
        return 1
    problems = []
    for pid in _recorded_pids(info):
        if not _alive(pid):
            problems.append(f"process {pid} is not running")
    try:
        code, version = _https(paths, info, "GET", "/version", timeout=5)
        print(f"API     {info['api']['url']}: {code} {version.get('gitVersion') if code == 200 else version}")
        if code != 200:
            problems.append("API not answering /version")
        code, hcs = _https(
            paths, info, "GET", "/apis/hypershift.openshift.io/v1beta1/hostedclusters", timeout=5
        )
        for hc in hcs.get("items", []) if code == 200 else []:
            conds = {c["type"]: c["status"] for c in hc.get("status", {}).get("conditions", [])}
            print(
                f"HC      {hc['metadata']['namespace']}/{hc['metadata']['name']}: "
                f"Available={conds.get('Available')} EtcdAvailable={conds.get('EtcdAvailable')} "
                f"ReconciliationActive={conds.get('ReconciliationActive')} "
                f"pausedUntil={hc['spec'].get('pausedUntil')}"
            )
    except (OSError, ValueError) as exc:
        problems.append(f"API unreachable: {exc}")
    try:
        ctx = ssl.create_default_context(cafile=str(paths.ca_crt))
        with urllib.request.urlopen(info["s3"]["url"] + "/", context=ctx, timeout=5) as resp:  # noqa: S310
            print(f"S3      {info['s3']['url']}: {resp.status}")
    except urllib.error.HTTPError as exc:
        print(f"S3      {info['s3']['url']}: {exc.code}")
    except OSError as exc:
        problems.append(f"S3 unreachable: {exc}")
    if info.get("hypershift_clock_ahead_seconds"):
        print(f"CLOCK   HyperShift runs {info['hypershift_clock_ahead_seconds']:.0f}s ahead (clock fault)")
    for problem in problems:
        print(f"UNHEALTHY: {problem}")
    print("healthy" if not problems else "unhealthy")
    return 1 if problems else 0


def cmd_render(args: argparse.Namespace) -> int:
    arn = args.kms_key_arn
    if args.encryption == "kms" and not arn:
        # The sandbox's own KMS key, as `hcp create cluster aws --kms-key-arn` would be given it.
        info = read_info(SandboxPaths.of(args.dir)) if args.dir else None
        arn = (info or {}).get("kms_key_arn")
        if not arn:
            print("--encryption kms needs --kms-key-arn, or --dir of a running sandbox", file=sys.stderr)
            return 1
    objects = render.manifests(
        args.name,
        args.namespace,
        args.members,
        infra_id=args.infra_id,
        external_dns_domain=args.external_dns_domain,
        kms_key_arn=arn if args.encryption == "kms" else None,
    )
    sys.stdout.write(render.to_yaml(objects))
    return 0


def fault_spec(args: argparse.Namespace) -> dict[str, Any]:
    """The JSON body of ``POST /sandbox/v1/faults`` for a ``fault`` subcommand."""
    kind = args.kind
    if kind == "api":
        return {
            "kind": kind,
            "resource": args.resource,
            "verb": args.verb,
            "code": args.code,
            "count": args.count,
        }
    if kind == "exec-drop":
        return {
            "kind": kind,
            "namespace": args.namespace,
            "pod": args.pod,
            "count": args.count,
            "after_bytes": args.after_bytes,
        }
    if kind == "s3":
        where = {"replica": True} if args.replica else {}
        if args.drop:
            return {"kind": kind, "drop": True, "after_bytes": args.after_bytes, "count": args.count, **where}
        return {"kind": kind, "code": args.code or 503, "count": args.count, **where}
    if kind in ("etcd-stop", "etcd-start"):
        return {"kind": kind, "namespace": args.namespace, "pod": args.pod}
    if kind == "restore-split-brain":
        return {"kind": kind, "count": args.count}
    if kind == "volume":
        return {"kind": kind, "namespace": args.namespace, "pod": args.pod, "free_bytes": args.free_bytes}
    if kind == "clock":
        return {"kind": kind, "ahead_seconds": args.ahead_seconds}
    if kind == "key-rotation":
        spec = {"kind": kind, "namespace": args.namespace, "name": args.name}
        if args.complete:
            return {**spec, "complete": True}
        return {**spec, "migrated": args.migrated, **({"secret": args.secret} if args.secret else {})}
    raise ValueError(kind)


def cmd_fault(args: argparse.Namespace) -> int:
    paths = SandboxPaths.of(args.dir)
    info = read_info(paths)
    if not info or not info.get("ready"):
        print(f"no running sandbox in {paths.root}", file=sys.stderr)
        return 1
    code, answer = _https(paths, info, "POST", "/sandbox/v1/faults", fault_spec(args))
    print(json.dumps(answer))
    return 0 if 200 <= code < 300 else 1


def cmd_serve(args: argparse.Namespace) -> int:
    from hcp_sandbox import serve
    from hcp_sandbox.controllers.cluster import Options

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    paths = SandboxPaths.of(args.dir)
    specs = [serve.ClusterSpec.parse(c) for c in args.cluster]
    options = Options(
        pod_ready_delay=args.pod_ready_delay,
        pod_termination_delay=args.pod_ready_delay,
        compaction_interval=args.compaction_interval,
        event_ttl=args.event_ttl,
        writes_per_second=args.writes_per_second,
        etcd_init=args.etcd_init,
    )
    from hcp_sandbox.rbac import RbacAuthorizer

    authorizer = RbacAuthorizer.from_paths([Path(p) for p in args.rbac]) if args.rbac else None
    return asyncio.run(
        serve.run(paths, specs, args.seed_mb, args.bucket, options, authorizer, args.replica_s3)
    )


# -- parser ------------------------------------------------------------------------------------


def cluster_specs(args: argparse.Namespace) -> list[Any]:
    """Hosted clusters from ``--cluster NAME[:MEMBERS]`` and ``--hosted-clusters N`` (default: one)."""
    from hcp_sandbox.serve import ClusterSpec

    specs = [ClusterSpec.parse(c, args.members, args.encryption) for c in args.cluster]
    count = args.hosted_clusters if args.hosted_clusters is not None else (0 if specs else 1)
    specs += [ClusterSpec(f"hc-{i + 1}", args.members, args.encryption) for i in range(count)]
    if len({s.name for s in specs}) != len(specs):
        raise SystemExit("hosted cluster names must be unique")
    return specs


def _positive_members(text: str) -> int:
    if text not in ("1", "3"):
        raise argparse.ArgumentTypeError("members must be 3 (HighlyAvailable) or 1 (SingleReplica)")
    return int(text)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hcp_sandbox", description="A HyperShift management cluster in a box."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start the sandbox in the background and wait until it is ready")
    up.add_argument("--dir", required=True)
    up.add_argument("--hosted-clusters", type=int, default=None, help="N hosted clusters of --members each")
    up.add_argument(
        "--members", type=_positive_members, default=3, help="3 (HighlyAvailable) or 1 (SingleReplica)"
    )
    up.add_argument("--cluster", action="append", default=[], metavar="NAME[:MEMBERS[:ENCRYPTION]]")
    up.add_argument(
        "--encryption",
        choices=ENCRYPTION_TYPES,
        default="aescbc",
        help="how hosted clusters without their own :ENCRYPTION encrypt Secrets: aescbc (a key Secret) "
        "or kms (envelope encryption with the sandbox's KMS key)",
    )
    up.add_argument("--seed-mb", type=float, default=0.0, help="about this much data in each etcd")
    up.add_argument("--bucket", default=DEFAULT_BUCKET)
    up.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for readiness")
    up.add_argument("--pod-ready-delay", type=float, default=1.0, help="seconds before a new pod is Ready")
    up.add_argument(
        "--compaction-interval",
        type=float,
        default=300.0,
        help="seconds between kube-apiserver's etcd compactions (its default: 5 minutes)",
    )
    up.add_argument(
        "--event-ttl", type=float, default=10800.0, help="kube-apiserver's --event-ttl, seconds (3h)"
    )
    up.add_argument(
        "--writes-per-second",
        type=_positive,
        default=5.0,
        help="what a running kube-apiserver writes into its etcd per second (leases, events)",
    )
    up.add_argument(
        "--etcd-init",
        choices=ETCD_INIT_VARIANTS,
        default="fixed",
        help="HyperShift's etcd-init of restores: fixed (PR 9048: one cluster) or legacy (released: "
        "each member of an HA restore its own one-member cluster, EtcdAvailable still True)",
    )
    up.add_argument(
        "--rbac",
        action="append",
        default=[],
        metavar="PATH",
        help="enforce the RBAC manifests in PATH (file or folder, e.g. include/rbac) for the issued token",
    )
    up.add_argument(
        "--replica-s3",
        action="store_true",
        help="also run a second S3 endpoint (region eu-west-1, bucket hcp-etcd-replica, connection "
        "aws_replica) that every backup is copied to",
    )
    up.set_defaults(func=cmd_up)

    for name, func, text in (
        ("down", cmd_down, "stop every process of the sandbox"),
        ("status", cmd_status, "report health (non-zero when unhealthy)"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--dir", required=True)
        p.set_defaults(func=func)

    rend = sub.add_parser(
        "render", help="print manifests like `hcp create cluster aws --render --render-sensitive`"
    )
    rend.add_argument("--dir", required=False, help="the sandbox (accepted for symmetry; not needed)")
    rend.add_argument("--name", required=True)
    rend.add_argument("--namespace", default=HOSTED_CLUSTER_NAMESPACE)
    rend.add_argument("--members", type=_positive_members, default=3)
    rend.add_argument("--infra-id", help="the infra id of pre-created infrastructure (as --infra-json gives)")
    rend.add_argument("--external-dns-domain", help="services get <service>-<name>.<domain> hostnames")
    rend.add_argument("--encryption", choices=ENCRYPTION_TYPES, default="aescbc")
    rend.add_argument("--kms-key-arn", help="with --encryption kms (default: the sandbox's key, --dir)")
    rend.set_defaults(func=cmd_render)

    fault = sub.add_parser("fault", help="inject a fault")
    fault.add_argument("--dir", required=True)
    kinds = fault.add_subparsers(dest="kind", required=True)
    api = kinds.add_parser("api", help="answer the next N requests to a resource with an error")
    api.add_argument("--resource", required=True, help="plural[/subresource] or *")
    api.add_argument("--verb", default="*")
    api.add_argument("--code", type=int, required=True)
    api.add_argument("--count", type=int, default=1)
    drop = kinds.add_parser("exec-drop", help="drop the next N exec streams of a pod")
    drop.add_argument("--namespace", required=True)
    drop.add_argument("--pod", required=True)
    drop.add_argument("--count", type=int, default=1)
    drop.add_argument("--after-bytes", type=int, default=0)
    s3 = kinds.add_parser("s3", help="fail the next N S3 requests (error code or dropped connection)")
    how = s3.add_mutually_exclusive_group(required=True)
    how.add_argument("--code", type=int)
    how.add_argument("--drop", action="store_true")
    s3.add_argument("--after-bytes", type=int, default=0)
    s3.add_argument("--count", type=int, default=1)
    s3.add_argument("--replica", action="store_true", help="fail the replica's endpoint (up --replica-s3)")
    for name in ("etcd-stop", "etcd-start"):
        p = kinds.add_parser(name, help=f"{name.split('-')[1]} the etcd member of a pod")
        p.add_argument("--namespace", required=True)
        p.add_argument("--pod", required=True)
    split = kinds.add_parser(
        "restore-split-brain",
        help="the next N restores run the legacy etcd-init (as up --etcd-init legacy): one-member clusters",
    )
    split.add_argument("--count", type=int, default=1)
    vol = kinds.add_parser("volume", help="what `df` reports as free in a pod (-1 resets)")
    vol.add_argument("--namespace", required=True)
    vol.add_argument("--pod", required=True)
    vol.add_argument("--free-bytes", type=int, required=True)
    clock = kinds.add_parser(
        "clock", help="run the HyperShift stand-in's clock S seconds ahead for pausedUntil (0 resets)"
    )
    clock.add_argument("--ahead-seconds", type=float, required=True)
    rotation = kinds.add_parser(
        "key-rotation",
        help="start an AES-CBC key rotation of a hosted cluster, partly migrated (or --complete it)",
    )
    rotation.add_argument("--namespace", default=HOSTED_CLUSTER_NAMESPACE)
    rotation.add_argument("--name", required=True)
    rotation.add_argument("--secret", help="the Secret of the new key (default: a new one, random key)")
    rotation.add_argument("--migrated", type=float, default=0.5, help="fraction of Secrets rewritten")
    rotation.add_argument("--complete", action="store_true", help="finish the rotation in progress")
    fault.set_defaults(func=cmd_fault)

    srv = sub.add_parser("serve", help=argparse.SUPPRESS)
    srv.add_argument("--dir", required=True)
    srv.add_argument("--cluster", action="append", default=[])
    srv.add_argument("--seed-mb", type=float, default=0.0)
    srv.add_argument("--bucket", default=DEFAULT_BUCKET)
    srv.add_argument("--pod-ready-delay", type=float, default=1.0)
    srv.add_argument("--compaction-interval", type=float, default=300.0)
    srv.add_argument("--event-ttl", type=float, default=10800.0)
    srv.add_argument("--writes-per-second", type=_positive, default=5.0)
    srv.add_argument("--etcd-init", choices=ETCD_INIT_VARIANTS, default="fixed")
    srv.add_argument("--rbac", action="append", default=[])
    srv.add_argument("--replica-s3", action="store_true")
    srv.set_defaults(func=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))
