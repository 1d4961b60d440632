"""The restore's etcd-membership step: one cluster of the expected size, or a split brain named at once.

Released HyperShift (``main`` 3ee9615567, release-4.20 to 5.2) restores an HA cluster into three
one-member clusters while ``EtcdAvailable`` stays True: its etcd-init runs ``snapshot restore``
without ``--initial-cluster`` (fixed by PR 9048, not released). No repair from outside fits
HyperShift's own init containers (docs/RUNBOOK.md, Part C, says why and gives the manual repair), so
this step fails the restore as soon as the cluster is Available, with what each member reports.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Context

from hcp_etcd.errors import SplitBrainError
from hcp_etcd.operators.restore import RestoreStepOperator
from hcp_etcd.restore.plan import replicas_of
from hcp_etcd.restore.verify import check_members, is_split_brain


class CheckEtcdClusterOperator(RestoreStepOperator):
    """Ask every etcd member of the restored cluster for its membership (``member list``).

    One cluster of the expected size: logged, nothing else (a healthy restore). A split restore:
    fails at once with ``SplitBrainError`` (not retried: a retry sees the same clusters) naming the
    split brain and the runbook section. Any other disagreement fails too, and is retried (a
    member may still be joining). Read-only, so a retry or a second run does nothing new.

    :return: ``{"members": {pod: [names]}, "replicas": int}``.
    """

    def run(self, context: Context) -> dict[str, Any]:
        """Read every member's view and judge it."""
        target = self.target
        replicas = replicas_of(self.k8s.get_hosted_cluster(target))
        views = self.k8s.etcd_member_views(target.control_plane_namespace)
        check = check_members(views, replicas)
        if check.passed:
            self.log.info(
                "%s: one %s-member etcd cluster, no split brain: %s", target, replicas, check.detail
            )
            return {"members": views, "replicas": replicas}
        self.log.error("%s: %s", target, check.detail)
        if is_split_brain(views, replicas):
            raise SplitBrainError(f"restored {target}: {check.detail}")
        raise RuntimeError(f"restored {target}: {check.detail}")
