"""Patches that remember what they replaced, so they can be put back (pure)."""

from __future__ import annotations

import copy
from typing import Any

_MISSING = object()


def merge_patch_revert(current: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """The merge patch that undoes ``patch`` applied to ``current`` (RFC 7386 semantics).

    Fields the patch sets that did not exist come back as ``None`` (= remove).

    :param current: the object before the patch.
    :param patch: a merge patch.
    """
    revert: dict[str, Any] = {}
    for key, value in patch.items():
        old = current.get(key, _MISSING) if isinstance(current, dict) else _MISSING
        if isinstance(value, dict) and isinstance(old, dict):
            revert[key] = merge_patch_revert(old, value)
        elif old is _MISSING:
            revert[key] = None
        else:
            revert[key] = copy.deepcopy(old)
    return revert


def _pointer_get(obj: Any, pointer: str) -> Any:
    cur = obj
    for raw in pointer.split("/")[1:]:
        token = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(cur, list):
            try:
                cur = cur[int(token)]
            except (ValueError, IndexError):
                return _MISSING
        elif isinstance(cur, dict) and token in cur:
            cur = cur[token]
        else:
            return _MISSING
    return cur


def json_patch_revert(current: dict[str, Any], ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The JSON patch that undoes ``ops`` on ``current`` (add/replace/remove on object paths).

    :param current: the object before the patch.
    :param ops: RFC 6902 operations.
    """
    revert: list[dict[str, Any]] = []
    for op in ops:
        kind, path = op.get("op"), op.get("path", "")
        if kind == "test":
            continue
        if kind not in ("add", "replace", "remove"):
            raise ValueError(f"cannot revert JSON patch op {kind!r} (only add, replace, remove, test)")
        old = _pointer_get(current, path)
        if old is _MISSING:
            revert.insert(0, {"op": "remove", "path": path})
        else:
            revert.insert(0, {"op": "add" if kind == "remove" else "replace", "path": path, "value": old})
    return revert
