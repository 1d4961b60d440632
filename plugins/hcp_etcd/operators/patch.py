"""The HostedCluster patch operator: the one path by which the steps change a HostedCluster."""

from __future__ import annotations

from typing import Any

from airflow.sdk import Context

from hcp_etcd.operators.base import HostedClusterOperator
from hcp_etcd.patches import json_patch_revert, merge_patch_revert

PATCH_TYPES = ("merge", "json")


class HostedClusterPatchOperator(HostedClusterOperator):
    """Patch a HostedCluster and return the patch that puts back what was replaced.

    Used as it is with ``patch``, or specialised by the steps that change a HostedCluster (pause,
    unpause, the replica bookkeeping of quiesce and resume), which compute their patch at run time and
    apply it with :meth:`apply_patch`.

    :param patch: a merge patch (dict) or JSON patch (list of operations); None for a step that
        computes its own. (templated)
    :param patch_type: ``merge`` or ``json``.
    :return: ``{"patch_type", "revert"}``: apply ``revert`` with the same type to undo.
    """

    template_fields: tuple[str, ...] = (*HostedClusterOperator.template_fields, "patch")
    template_fields_renderers = {"patch": "json"}
    ui_color = "#fdebd3"

    def __init__(
        self,
        *,
        patch: dict[str, Any] | list[dict[str, Any]] | None = None,
        patch_type: str = "merge",
        **kwargs: Any,
    ) -> None:
        """See the class docstring.

        :param kwargs: HostedClusterOperator arguments.
        """
        super().__init__(**kwargs)
        if patch_type not in PATCH_TYPES:
            raise ValueError(f"patch_type must be one of {PATCH_TYPES}")
        self.patch = patch
        self.patch_type = patch_type

    def apply_patch(
        self,
        patch: dict[str, Any] | list[dict[str, Any]],
        patch_type: str = "merge",
        *,
        current: dict[str, Any] | None = None,
        resource_version: str | None = None,
    ) -> Any:
        """Patch this task's HostedCluster; return the revert (None without ``current``).

        :param patch: a merge patch (dict) or JSON patch (list of operations).
        :param patch_type: ``merge`` or ``json``.
        :param current: the HostedCluster as read before (the revert is computed against it; no read
            is added here, so a step reads the cluster as often as it did).
        :param resource_version: patch only if the object is still at this version (merge patches;
            an ``ApiException`` 409 otherwise, never retried).
        """
        revert: Any = None
        if patch_type == "merge":
            if not isinstance(patch, dict):
                raise TypeError("a merge patch is a JSON object")
            if current is not None:
                revert = merge_patch_revert(current, patch)
        elif patch_type == "json":
            if not isinstance(patch, list):
                raise TypeError("a JSON patch is a list of operations")
            if current is not None:
                revert = json_patch_revert(current, patch)
        else:
            raise ValueError(f"patch_type must be one of {PATCH_TYPES}")
        if resource_version is not None:
            if not isinstance(patch, dict):
                raise TypeError("a conditional patch is a merge patch")
            self.k8s.patch_hosted_cluster_if_unchanged(self.ref, patch, resource_version)
        else:
            self.k8s.patch_hosted_cluster(self.ref, patch, patch_type)  # type: ignore[arg-type]
        self.log.info("patched HostedCluster %s (%s): %s; revert: %s", self.ref, patch_type, patch, revert)
        return revert

    def execute(self, context: Context) -> dict[str, Any]:
        """Read, compute the revert, patch."""
        if self.patch is None:
            raise ValueError(f"task {self.task_id} has no patch to apply")
        current = self.k8s.get_hosted_cluster(self.ref)
        revert = self.apply_patch(self.patch, self.patch_type, current=current)
        return {"patch_type": self.patch_type, "revert": revert}
