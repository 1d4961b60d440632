"""The sandbox's rooms: who imports whom, the JSON patch engine's answers, the faults room's state."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from hcp_sandbox.apiserver import JsonPatchError, json_patch
from hcp_sandbox.errors import ApiError
from hcp_sandbox.faults import RuntimeFaults

INCLUDE = Path(__file__).resolve().parents[2] / "include"


@pytest.mark.parametrize("module", ["errors", "resources", "validation", "faults"])
def test_the_lower_rooms_do_not_import_the_store(module: str) -> None:
    """errors, resources, validation and faults stand alone: no import circle through the store."""
    code = (
        f"import sys, hcp_sandbox.{module}; "
        "print(sorted(m for m in sys.modules if m in ('hcp_sandbox.store', 'hcp_sandbox.controllers')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env={"PYTHONPATH": str(INCLUDE)}, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


SECRET = {"metadata": {"name": "s"}, "data": {"key": "c2VjcmV0LWtleS1tYXRlcmlhbA=="}}


@pytest.mark.parametrize(
    ("op", "message"),
    [
        ({"op": "test", "path": "/data/key", "value": "x"}, "testing value /data/key failed: test failed"),
        (
            {"op": "replace", "path": "/data/other", "value": "x"},
            "replace operation does not apply: doc is missing key: /data/other: missing value",
        ),
        (
            {"op": "remove", "path": "/data/other"},
            "remove operation does not apply: doc is missing path: /data/other",
        ),
        (
            {"op": "add", "path": "/nope/x", "value": 1},
            "add operation does not apply: doc is missing path: /nope/x: missing value",
        ),
        (
            {"op": "move", "from": "/nope", "path": "/x"},
            "move operation does not apply: doc is missing path: /nope: missing value",
        ),
    ],
)
def test_a_json_patch_that_does_not_apply_names_the_operation_not_the_document(op, message) -> None:
    with pytest.raises(JsonPatchError) as err:
        json_patch(SECRET, [{"op": "add", "path": "/data/new", "value": "v"}, op])
    assert str(err.value) == message
    assert "c2VjcmV0" not in str(err.value), "the document (here a Secret) is never quoted"


@pytest.mark.parametrize(
    "ops",
    [
        {"op": "add"},
        [{"op": "add", "path": "/a"}],
        [{"op": "copy", "path": "/a"}],
        [{"op": "frobnicate", "path": "/a"}],
        [{"path": "/a", "value": 1}],
    ],
)
def test_a_malformed_json_patch_is_a_bad_request(ops) -> None:
    with pytest.raises(ApiError) as err:
        json_patch(SECRET, ops)
    assert err.value.code == 400


def test_runtime_faults_keep_their_state_per_pod_and_forget_a_namespace(tmp_path: Path) -> None:
    changes: list[str] = []
    faults = RuntimeFaults(tmp_path / "s3-faults.json", lambda ns, pod: None, lambda: changes.append("x"))
    with pytest.raises(ApiError) as err:
        asyncio.run(faults.inject({"kind": "volume", "namespace": "cp", "pod": "etcd-0", "free_bytes": 1}))
    assert err.value.code == 404, "only an etcd pod takes a volume fault"

    # Any member will do: the volume fault only checks that the pod is an etcd pod.
    faults = RuntimeFaults(
        tmp_path / "s3-faults.json", lambda ns, pod: (None, None), lambda: changes.append("x")
    )
    asyncio.run(faults.inject({"kind": "volume", "namespace": "cp", "pod": "etcd-0", "free_bytes": 4096}))
    assert faults.volume_free_bytes("cp", "etcd-0") == 4096
    assert faults.volume_free_bytes("cp", "etcd-1") is None
    faults.forget_namespace("cp")
    assert faults.volume_free_bytes("cp", "etcd-0") is None, "a deleted cluster's faults go with it"

    asyncio.run(faults.inject({"kind": "restore-split-brain", "count": 2}))
    assert [faults.take_legacy_etcd_init() for _ in range(3)] == [True, True, False]
    with pytest.raises(ApiError) as err:
        asyncio.run(faults.inject({"kind": "s3", "count": 1}))
    assert err.value.code == 400, "an s3 fault needs a code or drop"
    assert changes == ["x"], "only the volume fault changed the runtime"


def test_one_client_serves_the_cli_and_the_tests() -> None:
    """The CLI and the test harness call the sandbox through ``hcp_sandbox.client`` only (issue 13)."""
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    for path in (repo / "include/hcp_sandbox/cli.py", repo / "tests/support/sandbox.py",
                 repo / "tests/support/harness.py"):  # fmt: skip
        text = path.read_text()
        assert "urllib.request" not in text or path.name == "cli.py", path
        assert "SandboxClient" in text or "SandboxApi" in text or "box.api" in text, path
    cli = (repo / "include/hcp_sandbox/cli.py").read_text()
    assert "urllib.request.Request(" not in cli, "the CLI builds its own API requests again"
