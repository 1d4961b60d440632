"""``make bench``: the sandbox, a real Airflow, six figures; one printed line per figure.

``python -m bench [--quick] [--only 1,2,...] [--json FILE]``. ``--quick`` runs every figure at tiny
sizes and one repetition (what ``tests/bench`` runs: it proves the harness works, the numbers mean
nothing). Progress goes to stderr, the figure lines to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import sys
import time
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime

from bench import figures as fig
from bench.airflow_run import Airflow
from bench.common import GiB, MiB, Sandbox, log

HA = "dha"  # the three-member cluster of figure 1's HA ratio (issue 15)


@dataclass(frozen=True)
class Plan:
    """Sizes and repetitions of one bench run."""

    downtime_sizes: tuple[tuple[str, int], ...]  # (label, bytes added on top of the 4 MiB seed)
    downtime_reps: dict[str, int]
    ha_pairs: int  # quiesced backups of a 3-member and a 1-member cluster with the first size's data
    upload_size: int
    upload_reps: int
    memory_sizes: tuple[int, ...]
    fleet_clusters: int
    pool: int
    restore_raw_reps: int
    parse_reps: int


FULL = Plan(
    downtime_sizes=(("64MiB", 60 * MiB), ("1GiB", 1020 * MiB)),
    # Issue 7: median of 5 where one repetition takes under a minute. A 1 GiB quiesced backup run
    # takes longer (snapshot, verify, upload of 1 GiB): 1.
    downtime_reps={"64MiB": 5, "1GiB": 1},
    ha_pairs=3,
    upload_size=1 * GiB,
    upload_reps=5,
    memory_sizes=(256 * MiB, 2 * GiB),
    fleet_clusters=12,
    pool=4,
    restore_raw_reps=5,
    parse_reps=5,
)
QUICK = Plan(
    downtime_sizes=(("4MiB", 0),),
    downtime_reps={"4MiB": 1},
    ha_pairs=1,
    upload_size=8 * MiB,
    upload_reps=1,
    memory_sizes=(8 * MiB, 16 * MiB),
    fleet_clusters=2,
    pool=4,
    restore_raw_reps=1,
    parse_reps=1,
)


def main(argv: list[str] | None = None) -> int:
    """Run the bench.

    :param argv: arguments.
    """
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repetition")
    parser.add_argument("--only", default="1,2,3,4,5,6", help="figures to run, e.g. 2,3")
    parser.add_argument("--json", help="write every figure with its raw measurements here")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument(
        "--plugins",
        help="measure another plugins tree (e.g. a checkout of the previous commit): 'before' figures; "
        "must be given before the bench modules load, so it is read from HCP_ETCD_BENCH_PLUGINS too",
    )
    parser.add_argument("--dags", help="measure another dags folder ('before' figures)")
    parser.add_argument(
        "--downtime-sizes",
        help="figure 1 at these of the plan's sizes only, e.g. 64MiB (the 1 GiB fill alone takes minutes)",
    )
    args = parser.parse_args(argv)
    wanted = {"HCP_ETCD_BENCH_PLUGINS": args.plugins, "HCP_ETCD_BENCH_DAGS": args.dags}
    wanted = {k: os.path.abspath(v) for k, v in wanted.items() if v}
    if any(os.environ.get(k) != v for k, v in wanted.items()):
        # bench.common fixed its paths at import: start again with the variables set.
        os.environ.update(wanted)
        os.execv(
            sys.executable, [sys.executable, "-m", "bench", *(argv if argv is not None else sys.argv[1:])]
        )
    # TERM (a timeout, Ctrl-C from make) still stops Airflow and the sandbox in the finally below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    plan = QUICK if args.quick else FULL
    if args.downtime_sizes:
        keep = set(args.downtime_sizes.split(","))
        plan = replace(plan, downtime_sizes=tuple(x for x in plan.downtime_sizes if x[0] in keep))
    only = {int(x) for x in args.only.split(",")}
    work = fig.scratch()
    box = Sandbox(work / "sandbox")
    airflow: Airflow | None = None
    results: list[fig.Figure] = []
    started = time.monotonic()
    tag = datetime.now(UTC).strftime("%H%M%S")
    load_before = os.getloadavg()

    def emit(items: list[fig.Figure]) -> None:
        for item in items:
            results.append(item)
            print(item.line(), flush=True)

    try:
        sizes = [label for label, _ in plan.downtime_sizes]
        fleet = [f"f{i:02d}" for i in range(1, plan.fleet_clusters + 1)]
        clusters = [f"d{s.lower()}" for s in sizes] + ["xfer"] + (fleet if 4 in only else [])
        members = {c: 1 for c in clusters}
        if 1 in only:
            members[HA] = 3
        log(f"sandbox up: hosted clusters {members} (name: members) in {work}")
        box.up(*[a for c, n in members.items() for a in ("--cluster", f"{c}:{n}")], "--seed-mb", "4")
        box.export()
        fills = [(f"d{label.lower()}", extra) for label, extra in plan.downtime_sizes]
        if 1 in only:
            fills.append((HA, plan.downtime_sizes[0][1]))  # the same data as the first size's
        if 1 in only or 5 in only:
            for cluster, extra in fills:
                if extra:
                    t = time.monotonic()
                    box.fill(cluster, extra)
                    log(f"filled {cluster} with {extra // MiB} MiB in {time.monotonic() - t:.0f}s")
        if 6 in only:
            emit(fig.dag_parse(work, plan.parse_reps, box.env))
        if 2 in only:
            emit(fig.throughput(box, "xfer", plan.upload_size, plan.upload_reps))
        if 3 in only:
            emit(fig.memory(box, "xfer", list(plan.memory_sizes)))
        if only & {1, 4, 5}:
            log("starting airflow standalone (LocalExecutor)")
            airflow = Airflow(work / "airflow", box.env, plan.pool)
            airflow.start()
        if 1 in only and airflow:
            for label in sizes:
                cluster = f"d{label.lower()}"
                emit([fig.downtime(airflow, box, cluster, label, plan.downtime_reps[label], work, tag)])
            lone = f"d{sizes[0].lower()}"
            emit([fig.downtime_ha(airflow, box, lone, HA, sizes[0], plan.ha_pairs, work, tag)])
            emit([fig.downtime_online(airflow, lone, tag)])
        if 5 in only and airflow and 1 in only:
            emit(
                [
                    fig.restore(
                        airflow, box, f"d{sizes[-1].lower()}", "restored", work, tag, plan.restore_raw_reps
                    )
                ]
            )
        if 4 in only and airflow:
            emit(fig.fleet(airflow, fleet, plan.pool, tag))
    finally:
        if airflow:
            airflow.stop()
        box.down()
        total = time.monotonic() - started
        log(f"bench took {total:.0f}s; load average before {load_before}, after {os.getloadavg()}")
        if args.json:
            with open(args.json, "w") as out:
                json.dump(
                    {
                        "date": datetime.now(UTC).isoformat(timespec="seconds"),
                        "quick": args.quick,
                        "seconds": total,
                        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                        "loadavg_before": load_before,
                        "loadavg_after": os.getloadavg(),
                        "figures": [asdict(r) for r in results],
                    },
                    out,
                    indent=2,
                    default=str,
                )
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
