from hcp_etcd.patches import json_patch_revert, merge_patch_revert

HC = {"metadata": {"annotations": {"a": "1"}}, "spec": {"pausedUntil": None, "x": {"y": 2}}}


def test_merge_revert():
    patch = {"spec": {"pausedUntil": "true", "x": {"y": 3, "z": 1}}, "metadata": {"annotations": {"b": "2"}}}
    assert merge_patch_revert(HC, patch) == {
        "spec": {"pausedUntil": None, "x": {"y": 2, "z": None}},
        "metadata": {"annotations": {"b": None}},
    }


def test_json_revert():
    ops = [
        {"op": "test", "path": "/spec/x/y", "value": 2},
        {"op": "replace", "path": "/spec/x/y", "value": 5},
        {"op": "add", "path": "/spec/new", "value": 1},
        {"op": "remove", "path": "/metadata/annotations/a"},
    ]
    assert json_patch_revert(HC, ops) == [
        {"op": "add", "path": "/metadata/annotations/a", "value": "1"},
        {"op": "remove", "path": "/spec/new"},
        {"op": "replace", "path": "/spec/x/y", "value": 2},
    ]
