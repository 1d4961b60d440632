"""``make test``: the whole suite as five pytest sessions side by side.

``python -m tests.support.suites [PYTEST_ARGS...]`` runs each suite of :data:`SUITES` in a pytest
process of its own, at the same time, and prints their outputs one after the other, then a
summary; it exits non-zero when any suite failed. Every suite runs its tests in file order in one
process, as a plain ``pytest`` does: only the suites overlap.

Why it helps on two cores: most of a suite's time is spent waiting (for pods, for retries, for a
lock to expire, for an Airflow to start), and another suite's tests run in that time. Each suite
starts its own sandboxes; a session of its own keeps fixtures from being shared across suites.

How the tests are split (measured with ``--durations=0``): the reliability package and the
integration package are each two suites of about the same length as the rest. The fault matrix
(``test_faults.py``, its drill cases aside) is one reliability suite, the other files and the drill
cases the other. The secret-hygiene test of ``tests/reliability/test_security.py`` searches what
the runs of its own session left, so that file runs, last (file order), in both: each suite's runs
are searched (the whole-DAG upload test runs in both too: its ``dag.test()`` is what puts real
Airflow runs in each session's metadata DB and task logs for the hygiene test to search). The
hygiene test of ``tests/integration/test_backup_dag.py`` searches the runs of its module, which is
one suite whole.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tests.support.airflow import SHARED_DB_ENV

REPO = Path(__file__).resolve().parents[2]
NO_TESTS = 5  # pytest's exit code when the arguments (e.g. -k) select no test of a suite
FAULT_MATRIX = "tests/reliability/test_faults.py"
BACKUP_DAG = "tests/integration/test_backup_dag.py"
DRILL_FAULTS = "test_drill_fault"  # the fault matrix's drill cases: they balance the two reliability suites
# The longest first. Measured on 2 cores: the reliability and integration packages split in two
# suites each, of about the length of the rest (unit, sandbox, UI, foundation and bench tests).
SUITES: dict[str, list[str]] = {
    "fault matrix": [FAULT_MATRIX, "tests/reliability/test_security.py", "-k", f"not {DRILL_FAULTS}"],
    "reliability": ["tests/reliability", "-k", f"{DRILL_FAULTS} or not {Path(FAULT_MATRIX).name}"],
    "backup DAG": [BACKUP_DAG],
    "integration": ["tests/integration", f"--ignore={BACKUP_DAG}"],
    # tests/production is `make test-prod`, a tier of its own (tests/production/conftest.py).
    "the rest": [
        "tests",
        "--ignore=tests/reliability",
        "--ignore=tests/integration",
        "--ignore=tests/production",
    ],
}


def pytest_args(args: list[str], extra: list[str]) -> list[str]:
    """A suite's arguments, then the caller's; a ``-k`` of both is joined with ``and`` (pytest keeps
    only the last one, which would undo the suite's own selection).

    :param args: the suite's (``-k EXPR`` as two items).
    :param extra: the caller's (``-k EXPR``, ``-kEXPR``, ``--keyword EXPR`` or ``--keyword=EXPR``).
    """
    rest: list[str] = []
    theirs = None
    items = iter(extra)
    for item in items:
        if item in ("-k", "--keyword"):
            theirs = next(items, "")
        elif item.startswith("--keyword="):
            theirs = item.removeprefix("--keyword=")
        elif item.startswith("-k") and not item.startswith("--"):
            theirs = item[2:]
        else:
            rest.append(item)
    if theirs is None or "-k" not in args:
        return [*args, *extra]
    joined = list(args)
    at = joined.index("-k") + 1
    joined[at] = f"({joined[at]}) and ({theirs})"
    return [*joined, *rest]


@dataclass
class Running:
    """One suite's pytest process."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    started: float
    seconds: float = 0.0


def start(name: str, args: list[str], extra: list[str], scratch: Path) -> Running:
    """Start ``pytest ARGS EXTRA`` with its own base temp directory and its output in a file."""
    slug = name.replace(" ", "-")
    log = scratch / f"{slug}.log"
    cmd = [sys.executable, "-m", "pytest", *pytest_args(args, extra), f"--basetemp={scratch / slug}"]
    # One migrated metadata DB for every suite (tests.support.airflow.session_metadata_db).
    env = {**os.environ, SHARED_DB_ENV: str(scratch / "metadata-db")}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Running(name, proc, log, time.monotonic())


def main(extra: list[str]) -> int:
    """Run the suites; their outputs in order, then one line per suite."""
    scratch = Path(tempfile.mkdtemp(prefix="hcp-etcd-suites-"))
    busy_before = machine_busy_seconds()
    running = [start(name, args, extra, scratch) for name, args in SUITES.items()]
    started = time.monotonic()

    def stop(*_: object) -> None:
        for run in running:
            if run.proc.poll() is None:
                os.killpg(run.proc.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, lambda *a: (stop(), sys.exit(143)))
    try:
        pending = list(running)
        while pending:
            for run in list(pending):
                if run.proc.poll() is not None:
                    run.seconds = time.monotonic() - run.started
                    code = run.proc.returncode
                    print(f"== {run.name}: exit code {code} after {run.seconds:.0f}s", flush=True)
                    pending.remove(run)
            time.sleep(0.5)
    except KeyboardInterrupt:
        stop()
        raise
    for run in running:
        print(f"\n{'=' * 30} suite: {run.name} ({' '.join(SUITES[run.name])}) {'=' * 30}", flush=True)
        sys.stdout.buffer.write(run.log.read_bytes())
        sys.stdout.flush()
    # CPU: what the suites' processes used and waited for (sandbox servers run detached: not in it),
    # and what the whole machine was busy for (everything, the sandboxes included; on a shared machine
    # other work too). Wall time depends on the load; busy / (wall x cores) says whether the run was
    # bound by the CPU (near 1) or by waits.
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.monotonic() - started
    busy = machine_busy_seconds() - busy_before if busy_before is not None else None
    machine = f", machine busy {busy:.0f}s of {wall * (os.cpu_count() or 1):.0f}s" if busy is not None else ""
    print(
        f"\n{'=' * 30} suites, {wall:.0f}s wall in all, {used.ru_utime + used.ru_stime:.0f}s CPU"
        f"{machine} {'=' * 30}"
    )
    # A suite that selects no test passes only when the caller narrowed the run (-k, a path): the
    # whole suite always has tests, and "no tests" there means something is broken (pytest's exit 5).
    allowed = (0, NO_TESTS) if extra else (0,)
    for run in running:
        verdict = {0: "passed", NO_TESTS: "no test selected"}.get(
            run.proc.returncode, f"FAILED (exit code {run.proc.returncode})"
        )
        print(f"{run.name:>12}: {verdict} in {run.seconds:.0f}s")
    totals = count_outcomes(run.log.read_text(errors="replace") for run in running)
    failed = any(run.proc.returncode not in allowed for run in running) or totals["passed"] == 0
    if failed:
        print(f"base temp directories kept in {scratch}")
    else:
        shutil.rmtree(scratch, ignore_errors=True)
    # One closing line for the whole run, in the form test reports are read by.
    print(
        f"suites: {totals['passed']} passed, {totals['failed'] + totals['error']} failed, "
        f"{totals['skipped']} skipped"
    )
    return 1 if failed else 0


def machine_busy_seconds() -> float | None:
    """CPU seconds every core of the machine spent busy since boot (``/proc/stat``; None elsewhere)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
    except OSError:
        return None
    # user nice system idle iowait irq softirq steal ...: busy is all but idle and iowait.
    ticks = [int(x) for x in fields[1:]]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


_OUTCOME = re.compile(r"(\d+) (passed|failed|errors?|skipped)")


def count_outcomes(logs: Iterable[str]) -> dict[str, int]:
    """Passed, failed, error and skipped counts summed over pytest outputs (their closing lines).

    :param logs: each suite's whole output.
    """
    totals = dict.fromkeys(("passed", "failed", "error", "skipped"), 0)
    for text in logs:
        closing = [line for line in text.splitlines() if re.match(r"^=+ .* in [\d.]+s", line)]
        for number, word in _OUTCOME.findall(closing[-1] if closing else ""):
            totals["error" if word.startswith("error") else word] += int(number)
    return totals


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
