"""The KubernetesExec operator: a command in a container of an existing pod."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import Any

from airflow.providers.cncf.kubernetes.operators.pod_exec import KubernetesPodExecOperator
from airflow.sdk import Context

from hcp_etcd.hooks.hosted_cluster import HostedClusterHook


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
