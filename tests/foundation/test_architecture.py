"""The rooms of docs/ARCHITECTURE.md and the one rule of each, checked on the imports of every module.

Every import counts, a lazy one inside a function too: a rule that only holds at module level is
not a rule about what a room may touch.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PLUGINS = REPO / "plugins" / "hcp_etcd"

# The domain: pure decisions about names, state, manifests, retention, etcd output, restores.
DOMAIN = [
    "aescbc.py", "conditions.py", "encryption.py", "etcd.py", "manifest.py", "naming.py", "patches.py",
    "retention.py", "state.py", "status.py", "restore",
]  # fmt: skip
# What the domain must never touch: I/O clients, the hooks, the operators and triggers above it.
IO_AND_ABOVE = (
    "kubernetes", "kubernetes_asyncio", "boto3", "botocore", "airflow.providers", "hcp_etcd.hooks",
    "hcp_etcd.operators", "hcp_etcd.triggers", "hcp_etcd.ui", "hcp_sandbox", "subprocess", "socket",
)  # fmt: skip


def imports(path: Path) -> set[str]:
    """Every module a file imports, anywhere in it."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def files(*roots: Path) -> list[Path]:
    return sorted(p for root in roots for p in ([root] if root.is_file() else root.rglob("*.py")))


def touches(path: Path, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(m for m in imports(path) if any(m == f or m.startswith(f + ".") for f in forbidden))


def _name(path: Path) -> str:
    return str(path.relative_to(REPO))


@pytest.mark.parametrize("path", files(*(PLUGINS / d for d in DOMAIN)), ids=_name)
def test_the_domain_does_no_io(path: Path) -> None:
    assert touches(path, IO_AND_ABOVE) == [], f"{path.name} is domain logic: no clients, hooks or operators"


@pytest.mark.parametrize("path", files(PLUGINS / "hooks", PLUGINS / "triggers"), ids=lambda p: p.name)
def test_hooks_and_triggers_know_no_operator(path: Path) -> None:
    assert touches(path, ("hcp_etcd.operators", "hcp_etcd.ui", "hcp_sandbox")) == []


@pytest.mark.parametrize("path", files(REPO / "dags"), ids=lambda p: p.name)
def test_dag_files_only_wire(path: Path) -> None:
    """DAG files import operators, Params and names: no hook, no client (no I/O at parse)."""
    forbidden = ("hcp_etcd.hooks", "kubernetes", "boto3", "botocore", "airflow.providers.amazon",
                 "airflow.providers.cncf", "hcp_sandbox", "requests", "urllib")  # fmt: skip
    assert touches(path, forbidden) == []


def test_the_product_and_the_sandbox_share_no_code() -> None:
    """The sandbox stands in for HyperShift: it must not borrow the product's reading of it (nor the
    product the sandbox's), or a shared mistake would pass every test."""
    product = [p for p in files(REPO / "plugins", REPO / "dags") if touches(p, ("hcp_sandbox",))]
    sandbox = [p for p in files(REPO / "include" / "hcp_sandbox") if touches(p, ("hcp_etcd",))]
    assert product == [] and sandbox == [], (product, sandbox)


def test_no_step_execs_or_patches_around_its_kind() -> None:
    """Only the kinds' base classes call the hook's exec and HostedCluster patch methods."""
    owners = {
        "exec_command": {"kubernetes.py"},
        "open_exec": {"kubernetes.py"},
        "patch_hosted_cluster": {"patch.py"},
        "patch_hosted_cluster_if_unchanged": {"patch.py"},
    }
    found: dict[str, set[str]] = {name: set() for name in owners}
    for path in files(PLUGINS / "operators"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in owners:
                found[node.attr].add(path.name)
    assert found == owners
