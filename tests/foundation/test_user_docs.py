"""The users' pages speak to users: no issue numbers or design notes, links that resolve, and
commands, settings and annotations that exist in the code."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
# What a user reads (the sandbox README and docs/ARCHITECTURE.md are for contributors).
USER_PAGES = (
    "README.md",
    "docs/RUNBOOK.md",
    "docs/RESTORE.md",
    "docs/BACKUP.md",
    "docs/RELIABILITY.md",
    "include/deploy/README.md",
    "include/rbac/README.md",
    "include/aws/README.md",
)
LINKED_PAGES = (*USER_PAGES, "docs/ARCHITECTURE.md", "include/hcp_sandbox/README.md", "BENCHMARKS.md")

# "#14" (not "PKCS#7", "runc#3359", a colour "#1565c0" or a link to "(#0-decide)"), "issue 15",
# "issues 5 and 7".
ISSUE_NUMBER = re.compile(r"(?<![\w&(])#\d+\b|\bissues? \d+", re.IGNORECASE)
# Notes users do not have: the design notes, and paths of a developer's machine (a home directory,
# a test run's temporary directory).
NOT_FOR_USERS = re.compile(r"\bDESIGN\.md\b|(?<![\w.~])/(?:home|root|Users)/\w|/tmp/pytest-")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
CODE_SPAN = re.compile(r"`[^`\n]*`")
FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)
DAG_COMMAND = re.compile(r"airflow (?:dags (?:trigger|pause|unpause|list-runs|state)|tasks \w+) ([a-z0-9_]+)")
DAG_ID_FLAG = re.compile(r"--dag-id ([a-z0-9_]+)")
CONF = re.compile(r"airflow dags trigger ([a-z0-9_]+) --conf '(\{.*?\})'", re.DOTALL)
ENV_VAR = re.compile(r"\bHCP_ETCD_[A-Z0-9_]*[A-Z0-9]\b")
ANNOTATION = re.compile(r"\bhcp-etcd\.openshift\.io/([a-z0-9](?:[a-z0-9-]*[a-z0-9])?)")


def read(page: str) -> str:
    return (REPO / page).read_text(encoding="utf-8")


def code_text() -> str:
    """The code that reads settings and sets annotations: the product, and what `make demo` runs."""
    files = [p for d in ("plugins", "dags") for p in (REPO / d).rglob("*.py")]
    files += [*(REPO / "include" / "demo").iterdir(), REPO / "Makefile"]
    return "".join(p.read_text(encoding="utf-8") for p in files if p.is_file())


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[`*]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in FENCE.sub("", page.read_text(encoding="utf-8")).splitlines():
        match = re.match(r"#{1,6} (.+)", line)
        if not match:
            continue
        base = slug(match[1])
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


@pytest.mark.parametrize("page", USER_PAGES)
def test_user_pages_cite_no_issue_numbers_or_design_notes(page: str) -> None:
    text = read(page)
    found = [
        f"line {text.count(chr(10), 0, m.start()) + 1}: {m[0]!r}"
        for pattern in (ISSUE_NUMBER, NOT_FOR_USERS)
        for m in pattern.finditer(text)
    ]
    assert not found, f"{page} speaks of the project's issues or notes a user does not have: {found}"


def test_the_issue_number_pattern_catches_what_it_must() -> None:
    assert ISSUE_NUMBER.search("as in #14") and ISSUE_NUMBER.search("(issue 15)")
    assert ISSUE_NUMBER.search("Issues 5 and 7")
    for fine in ("PKCS#7", "opencontainers/runc#3359", "fill:#e3f2fd,stroke:#1565c0", "[Decide](#0-decide)"):
        assert not ISSUE_NUMBER.search(fine), fine


@pytest.mark.parametrize("page", LINKED_PAGES)
def test_relative_links_resolve(page: str) -> None:
    here = REPO / page
    broken = []
    for target in LINK.findall(CODE_SPAN.sub("", FENCE.sub("", read(page)))):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        file = (here.parent / path).resolve() if path else here
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no such heading")
    assert not broken, f"{page}: {broken}"


def test_slugs_follow_github() -> None:
    assert slug("Part C — an HA restore split into one-member clusters") == (
        "part-c--an-ha-restore-split-into-one-member-clusters"
    )
    assert slug("S3 Object Lock (tamper-proof backups)") == "s3-object-lock-tamper-proof-backups"
    assert slug("The `hcp_etcd_restore` DAG") == "the-hcp_etcd_restore-dag"


@pytest.fixture(scope="module")
def dag_params(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    os.environ.setdefault("AIRFLOW_HOME", str(tmp_path_factory.mktemp("airflow-home")))
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    return {dag_id: set(dag.params) for dag_id, dag in bag.dags.items()}


@pytest.mark.parametrize("page", USER_PAGES)
def test_commands_name_dags_and_params_that_exist(page: str, dag_params: dict[str, set[str]]) -> None:
    text = read(page)
    named = set(DAG_COMMAND.findall(text)) | set(DAG_ID_FLAG.findall(text))
    assert not named - set(dag_params), f"{page} names DAGs that do not exist: {named - set(dag_params)}"
    for dag_id, conf in CONF.findall(text):
        keys: dict[str, Any] = json.loads(conf)
        unknown = set(keys) - dag_params[dag_id]
        assert not unknown, f"{page}: `airflow dags trigger {dag_id}` passes unknown Params {unknown}"


def test_the_runbook_triggers_restores_and_pauses_backups(dag_params: dict[str, set[str]]) -> None:
    """The checks above read what the runbook says: make sure there is something to read."""
    runbook = read("docs/RUNBOOK.md")
    assert {"hcp_etcd_restore", "hcp_etcd_backup"} <= {d for d, _ in CONF.findall(runbook)}
    assert "airflow dags pause hcp_etcd_backup" in runbook
    assert "airflow dags pause hcp_etcd_restore_drill" in runbook


@pytest.mark.parametrize("page", USER_PAGES)
def test_settings_and_annotations_named_exist_in_the_code(page: str) -> None:
    text, code = read(page), code_text()
    env = {v for v in ENV_VAR.findall(text) if f'"{v}"' not in code and f"${{{v}" not in code}
    assert not env, f"{page} names settings no code reads: {env}"
    annotations = {a for a in ANNOTATION.findall(text) if f"/{a}" not in code}
    assert not annotations, f"{page} names annotations the code never sets: {annotations}"
