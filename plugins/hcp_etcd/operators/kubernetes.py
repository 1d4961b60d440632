"""Generic Kubernetes operators: patch a HostedCluster, exec a command in a pod."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import Any

from airflow.providers.cncf.kubernetes.operators.pod_exec import KubernetesPodExecOperator
from airflow.sdk import Context

from hcp_etcd.hooks.hosted_cluster import HostedClusterHook
from hcp_etcd.operators.base import HostedClusterOperator
from hcp_etcd.patches import json_patch_revert, merge_patch_revert


class HostedClusterPatchOperator(HostedClusterOperator):
    """Patch a HostedCluster and return the patch that puts back what was replaced.

    :param patch: a merge patch (dict) or JSON patch (list of operations). (templated)
    :param patch_type: ``merge`` or ``json``.
    :return: ``{"patch_type", "revert"}``: apply ``revert`` with the same type to undo.
    """

    template_fields: tuple[str, ...] = (*HostedClusterOperator.template_fields, "patch")
    template_fields_renderers = {"patch": "json"}

    def __init__(
        self, *, patch: dict[str, Any] | list[dict[str, Any]], patch_type: str = "merge", **kwargs: Any
    ) -> None:
        """See the class docstring.

        :param kwargs: HostedClusterOperator arguments.
        """
        super().__init__(**kwargs)
        if patch_type not in ("merge", "json"):
            raise ValueError("patch_type must be 'merge' or 'json'")
        self.patch = patch
        self.patch_type = patch_type

    def execute(self, context: Context) -> dict[str, Any]:
        """Read, compute the revert, patch."""
        current = self.k8s.get_hosted_cluster(self.ref)
        if self.patch_type == "merge":
            if not isinstance(self.patch, dict):
                raise TypeError("a merge patch is a JSON object")
            revert: Any = merge_patch_revert(current, self.patch)
        else:
            if not isinstance(self.patch, list):
                raise TypeError("a JSON patch is a list of operations")
            revert = json_patch_revert(current, self.patch)
        self.k8s.patch_hosted_cluster(self.ref, self.patch, self.patch_type)  # type: ignore[arg-type]
        self.log.info("patched HostedCluster %s (%s); revert: %s", self.ref, self.patch_type, revert)
        return {"patch_type": self.patch_type, "revert": revert}


class KubernetesExecOperator(KubernetesPodExecOperator):
    """Run a command in a container of an existing pod, streaming its output into the task log.

    Built on the provider's ``KubernetesPodExecOperator`` (same arguments, pod and container
    checks) and adds what it lacks: a timeout, stderr in the error on a non-zero exit, and an
    error when the stream is lost before an exit status arrives. The command must be idempotent:
    a task retry runs it again.

    :param timeout: seconds the command may take. (templated)
    :param kwargs: ``KubernetesPodExecOperator`` arguments (pod_name, command, namespace,
        container_name, kubernetes_conn_id, do_xcom_push, ...).
    """

    template_fields: Sequence[str] = (*KubernetesPodExecOperator.template_fields, "timeout")

    def __init__(self, *, timeout: float = 600, **kwargs: Any) -> None:
        """See the class docstring."""
        super().__init__(**kwargs)
        self.timeout = timeout

    @cached_property
    def hook(self) -> HostedClusterHook:  # type: ignore[override]
        """Our hook (a ``KubernetesHook``) so exec goes through the one Kubernetes client."""
        return HostedClusterHook(
            kubernetes_conn_id=self.kubernetes_conn_id or "kubernetes_default",
            in_cluster=self.in_cluster,
            config_file=self.config_file,
            cluster_context=self.cluster_context,
        )

    def on_kill(self) -> None:
        """Close the exec stream and end the command in the pod (the provider only closes the stream)."""
        super().on_kill()
        for problem in self.hook.stop_execs():
            self.log.warning("could not stop the command in the pod: %s", problem)

    def execute(self, context: Context) -> str | None:
        """Validate the target like the provider does, then run with our streaming exec."""
        command = self._validate_command()
        namespace = self._resolve_namespace()
        pod = self.hook.get_pod(name=self.pod_name, namespace=namespace)
        container = self._resolve_container_name(pod)
        self._validate_container_is_running(pod, container)
        out_lines: list[str] = []

        def on_line(line: str) -> None:
            self.log.info("[stdout] %s", line)
            if self.do_xcom_push:
                out_lines.append(line)

        def on_err(text: str) -> None:
            for line in text.rstrip("\n").splitlines():
                self.log.info("[stderr] %s", line)

        self.hook.exec_command(
            namespace,
            self.pod_name,
            command,
            container=container,
            timeout=float(self.timeout),
            on_stdout_line=on_line,
            on_stderr=on_err,
        )
        if not self.do_xcom_push:
            return None
        output = "\n".join(out_lines)
        if len(output.encode()) > self.max_xcom_output_size:
            raise RuntimeError(f"output exceeds the XCom limit of {self.max_xcom_output_size} bytes")
        return output
