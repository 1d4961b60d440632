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

from hcp_etcd import etcd
from hcp_etcd.errors import SplitBrainError
from hcp_etcd.operators.kubernetes import KubernetesExecOperator
from hcp_etcd.operators.restore import RestoreStepOperator
from hcp_etcd.restore.plan import replicas_of
from hcp_etcd.restore.verify import check_members, is_split_brain


class CheckEtcdClusterOperator(RestoreStepOperator, KubernetesExecOperator):
    """Ask every etcd member of the restored cluster for its membership (``member list`` in each pod).

    Asked of every member, not through the ``etcd-client`` Service: after a split restore each
    member answers for a cluster of its own, and the Service would pick one at random.

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
        ns = target.control_plane_namespace
        command = etcd.member_list_command()
        views = {
            pod: etcd.parse_member_list(self.exec_in_pod(ns, pod, command, timeout=60).stdout)
            for pod in self.k8s.list_etcd_pods(ns)
        }
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
