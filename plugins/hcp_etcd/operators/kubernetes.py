"""The KubernetesExec operator: commands in containers of existing pods, the one exec path of the steps."""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from airflow.sdk import Context

from hcp_etcd.naming import ETCD_CONTAINER
from hcp_etcd.operators.base import HostedClusterOperator

if TYPE_CHECKING:
    from hcp_etcd.hooks.hosted_cluster import ExecResult, ExecStream, HostedClusterHook

T = TypeVar("T")
# The provider's XCom limit for a command's stdout (KubernetesPodExecOperator's default).
MAX_XCOM_OUTPUT_SIZE = 49_344


class KubernetesExecOperator(HostedClusterOperator):
    """Run commands in containers of existing pods, their output in the task log.

    The project's KubernetesExec operator. Used as it is, it runs ``command`` in ``pod_name`` with the
    arguments and pod and container checks of the provider's ``KubernetesPodExecOperator``. The
    in-pod steps (member checks, snapshot, snapshot status, checksums, cleanup, the restore's checks)
    specialise it: they compute their commands at run time and run them with :meth:`exec_in_pod`,
    :meth:`open_exec_in_pod` or :meth:`exec_in_each`, the one exec path.

    Not a subclass of the provider's operator: that module imports the kubernetes client (seconds),
    and DAG files import every step at each parse; and its exec has no timeout, no stdin (a presigned
    URL must not go on a command line) and leaves the command running in the pod when the task is
    killed (``on_kill`` only closes the stream). The exec itself is the hook's
    (``HostedClusterHook.exec_command``, the kubernetes client's exec stream). A command must be
    idempotent: a task retry runs it again.

    :param pod_name: the pod (the generic use). (templated)
    :param command: argv, no shell unless it names one (the generic use). (templated)
    :param namespace: the pod's namespace; default: the HostedCluster's control-plane namespace.
        (templated)
    :param container_name: the container; default: the ``kubectl.kubernetes.io/default-container``
        annotation, else the first container. (templated)
    :param timeout: seconds a command may take. (templated)
    :param max_xcom_output_size: the generic use returns stdout up to this many bytes.
    :param kwargs: HostedClusterOperator arguments.
    """

    template_fields: tuple[str, ...] = (
        *HostedClusterOperator.template_fields,
        "pod_name",
        "command",
        "namespace",
        "container_name",
        "timeout",
    )
    template_fields_renderers = {"command": "py"}
    ui_color = "#d6e6fa"

    def __init__(
        self,
        *,
        pod_name: str | None = None,
        command: Sequence[str] | None = None,
        namespace: str | None = None,
        container_name: str | None = None,
        timeout: float = 600,
        max_xcom_output_size: int = MAX_XCOM_OUTPUT_SIZE,
        **kwargs: Any,
    ) -> None:
        """See the class docstring."""
        super().__init__(**kwargs)
        self.pod_name = pod_name
        self.command = command
        self.namespace = namespace
        self.container_name = container_name
        self.timeout = timeout
        self.max_xcom_output_size = max_xcom_output_size
        self._thread_hooks: list[HostedClusterHook] = []

    # ---- the exec path ---------------------------------------------------------------------------

    def exec_in_pod(
        self,
        namespace: str,
        pod: str,
        command: list[str],
        *,
        timeout: float | None = None,
        container: str = ETCD_CONTAINER,
        on_stdout_line: Callable[[str], None] | None = None,
        log_output: bool = False,
        hook: HostedClusterHook | None = None,
    ) -> ExecResult:
        """Run ``command`` in a container to completion; raise ``ExecError`` on a non-zero exit.

        :param namespace: the pod's namespace.
        :param pod: the pod.
        :param command: argv.
        :param timeout: seconds it may take (default: ``timeout``).
        :param container: the container.
        :param on_stdout_line: each stdout line goes here and is not collected.
        :param log_output: log stdout and stderr lines, prefixed with the pod (long-running commands,
            whose progress the task log shows); otherwise stdout is collected and stderr kept for the
            error message.
        :param hook: the hook of a thread (:meth:`exec_in_each`); default: the task's.
        """
        on_line = on_stdout_line
        if log_output and on_line is None:
            on_line = self._log_lines(pod)
        return (hook or self.k8s).exec_command(
            namespace,
            pod,
            command,
            container=container,
            timeout=float(self.timeout if timeout is None else timeout),
            on_stdout_line=on_line,
            on_stderr=self._log_lines(pod) if log_output else None,
        )

    @contextlib.contextmanager
    def open_exec_in_pod(
        self,
        namespace: str,
        pod: str,
        command: list[str],
        *,
        timeout: float | None = None,
        container: str = ETCD_CONTAINER,
        stdin: bool = False,
    ) -> Iterator[ExecStream]:
        """A command whose stdout is read as a binary stream (an upload reads it into S3).

        :param namespace: the pod's namespace.
        :param pod: the pod.
        :param command: argv.
        :param timeout: seconds it may take (default: ``timeout``).
        :param container: the container.
        :param stdin: open its stdin (a secret goes this way, never on the command line).
        """
        limit = float(self.timeout if timeout is None else timeout)
        with self.k8s.open_exec(namespace, pod, command, container, limit, stdin=stdin) as stream:
            yield stream

    def exec_in_each(self, pods: Sequence[str], run: Callable[[str, HostedClusterHook], T]) -> dict[str, T]:
        """``run(pod, hook)`` for every pod at once, each in a thread with a hook of its own.

        The kubernetes client's exec stream swaps its ApiClient's request method while it connects,
        so threads running execs at once must not share a hook; :meth:`on_kill` stops them all.

        :param pods: the pods.
        :param run: what to do in one pod (passes ``hook`` on to :meth:`exec_in_pod`).
        :return: each pod's result; raises ``ExecInEachError`` naming every pod that failed.
        """
        # Imported here: DAG files import every step at each parse (BENCHMARKS.md, figure 6).
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=max(len(pods), 1), thread_name_prefix="exec") as pool:
            futures = {pod: pool.submit(run, pod, self._thread_hook()) for pod in pods}
        failed = {pod: f.exception() for pod, f in futures.items() if f.exception() is not None}
        if failed:
            raise ExecInEachError(failed)
        return {pod: f.result() for pod, f in futures.items()}

    def _thread_hook(self) -> HostedClusterHook:
        hook = self.build_k8s_hook()
        self._thread_hooks.append(hook)
        return hook

    def _log_lines(self, prefix: str) -> Callable[[str], None]:
        def emit(text: str) -> None:
            for line in text.rstrip("\n").splitlines():
                self.log.info("[%s] %s", prefix, line)

        return emit

    def on_kill(self) -> None:
        """Stop the commands this task runs in pods: close their exec streams and end their processes.

        Airflow calls it when the task is killed (SIGTERM from the UI or the supervisor, or
        ``execution_timeout``); the exec loops then end with an ``ExecError``.
        """
        super().on_kill()
        hooks = [self.__dict__["k8s"]] if "k8s" in self.__dict__ else []
        for hook in [*hooks, *self._thread_hooks]:
            for problem in hook.stop_execs():
                self.log.warning("could not stop a command in a pod: %s", problem)

    # ---- the generic use -------------------------------------------------------------------------

    def execute(self, context: Context) -> str | None:
        """Check the pod and container as the provider does, run ``command``, return its stdout."""
        command = self.command
        if isinstance(command, str) or not isinstance(command, Sequence) or not command:
            raise TypeError(f"task {self.task_id}: command must be a non-empty list of strings")
        if not all(isinstance(arg, str) for arg in command):
            raise TypeError(f"task {self.task_id}: every element of command must be a string")
        if not self.pod_name:
            raise ValueError(f"task {self.task_id}: pod_name is not set")
        namespace = str(self.namespace or self.ref.control_plane_namespace)
        pod = str(self.pod_name)
        container = self._running_container(namespace, pod)
        self.log.info("running `%s` in %s/%s[%s]", shlex.join(command), namespace, pod, container)
        out: list[str] = []
        size = 0

        def on_line(line: str) -> None:
            nonlocal size
            self.log.info("[stdout] %s", line)
            if self.do_xcom_push:
                size += len(line.encode()) + 1
                if size > self.max_xcom_output_size:
                    raise RuntimeError(f"output exceeds the XCom limit of {self.max_xcom_output_size} bytes")
                out.append(line)

        self.exec_in_pod(
            namespace, pod, list(command), container=container, on_stdout_line=on_line, log_output=True
        )
        return "\n".join(out) if self.do_xcom_push else None

    def _running_container(self, namespace: str, pod: str) -> str:
        """The container to exec in (the provider's rule), which must be running."""
        obj = self.k8s.get_pod(pod, namespace)
        names = [c.name for c in (obj.spec.containers if obj.spec else None) or []]
        if not names:
            raise RuntimeError(f"pod {namespace}/{pod} defines no containers")
        annotations = (obj.metadata.annotations if obj.metadata else None) or {}
        container = self.container_name or annotations.get("kubectl.kubernetes.io/default-container")
        if container not in names:
            if self.container_name:
                raise ValueError(f"container {self.container_name!r} does not exist in pod {namespace}/{pod}")
            container = names[0]
        if not self.k8s.pod_is_running(namespace, pod, str(container)):
            raise RuntimeError(f"container {container!r} of pod {namespace}/{pod} is not running")
        return str(container)


class ExecInEachError(RuntimeError):
    """Commands failed in some pods of :meth:`KubernetesExecOperator.exec_in_each`.

    :param failed: pod -> its exception.
    """

    def __init__(self, failed: dict[str, BaseException]) -> None:
        """See the class docstring."""
        self.failed = failed
        super().__init__("; ".join(f"{pod}: {err}" for pod, err in failed.items()))
        self.__cause__ = next(iter(failed.values()))
