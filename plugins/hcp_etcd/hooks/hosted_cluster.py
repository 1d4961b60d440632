"""HostedClusterHook: the one place that talks to the Kubernetes API of the management cluster."""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import tenacity
import yaml
from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook
from airflow.providers.cncf.kubernetes.kubernetes_helper_functions import (
    API_RETRIES,
    TRANSIENT_CONNECTION_ERRORS,
    TRANSIENT_STATUS_CODES,
    WaitRetryAfterOrExponential,
    generic_api_retry,
)
from kubernetes.client.rest import ApiException
from kubernetes.stream import stream as kubernetes_stream
from kubernetes.stream.ws_client import ERROR_CHANNEL, STDERR_CHANNEL, STDOUT_CHANNEL, _IgnoredIO

from hcp_etcd.naming import ETCD_CONTAINER, ClusterRef

HC_GROUP = "hypershift.openshift.io"
HC_VERSION = "v1beta1"
HC_PLURAL = "hostedclusters"
ETCD_POD_SELECTOR = "app=etcd"
PatchType = Literal["merge", "json"]
_PATCH_CONTENT_TYPES = {"merge": "application/merge-patch+json", "json": "application/json-patch+json"}
_STDERR_TAIL = 4096
# Every command run in a pod carries this variable with a value of its own (in its environment, which
# its children inherit): what ``stop_execs`` looks for in the pod's /proc to end it and its children.
EXEC_ID_VARIABLE = "HCP_ETCD_EXEC_ID"
# Ends the processes of one exec: those whose environment holds the exec's id (``$1``): SIGTERM, then
# SIGKILL for what is left a second later. sh, grep, kill and sleep only (the etcd image has them).
_STOP_SCRIPT = (
    'pids=""; for f in /proc/[0-9]*/environ; do '
    'grep -qsF -- "$1" "$f" && { p=${f#/proc/}; pids="$pids ${p%/environ}"; }; done; '
    '[ -n "$pids" ] || exit 0; kill -TERM $pids 2>/dev/null; sleep 1; kill -KILL $pids 2>/dev/null; exit 0'
)


def stop_command(exec_id: str) -> list[str]:
    """argv ending, in a pod, every process of the exec whose id is ``exec_id``.

    :param exec_id: the value of ``EXEC_ID_VARIABLE`` the exec was started with.
    """
    return ["sh", "-c", _STOP_SCRIPT, "sh", f"{EXEC_ID_VARIABLE}={exec_id}"]


T = TypeVar("T")
M = TypeVar("M")


def _retry_unless_conflict(exc: BaseException) -> bool:
    # A conditional write (resourceVersion or JSON-patch test) that conflicts must not be re-sent
    # blindly: the caller re-reads and decides. Everything else transient is retried as the provider does.
    if isinstance(exc, ApiException):
        return exc.status in TRANSIENT_STATUS_CODES and exc.status != 409
    return isinstance(exc, TRANSIENT_CONNECTION_ERRORS)


conditional_api_retry = tenacity.retry(
    stop=tenacity.stop_after_attempt(API_RETRIES),
    wait=WaitRetryAfterOrExponential(),
    retry=tenacity.retry_if_exception(_retry_unless_conflict),
    reraise=True,
)


def _describe(command: list[str]) -> str:
    """A short form of an argv for messages (the TLS flags of etcdctl are noise)."""
    text = " ".join(command)
    return text if len(text) <= 240 else text[:237] + "..."


class ExecError(RuntimeError):
    """A command in a container failed, timed out or lost its stream."""


class ObjectExistsError(RuntimeError):
    """An object to create exists already (the API answered 409 Conflict): it is never replaced.

    :param what: ``Kind namespace/name`` of the object.
    """

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} exists already")
        self.what = what


@dataclass
class ExecResult:
    """Outcome of a command run in a container.

    :param returncode: its exit code.
    :param stdout: collected stdout (empty when stdout was streamed to a callback).
    :param stderr_tail: the last few KiB of stderr.
    """

    returncode: int
    stdout: str
    stderr_tail: str


class ExecStream:
    """A running exec: stdout as a binary file-like object (``read``) plus stderr and the exit code.

    boto3's transfer manager reads from it, so the snapshot flows pod -> worker -> S3 in chunks
    without ever being held whole in memory.

    :param client: the websocket client from ``kubernetes.stream``.
    :param target: ``ns/pod[container]`` for messages.
    :param timeout: seconds the whole command may take.
    :param on_stderr: called with each stderr chunk (decoded).
    """

    def __init__(
        self,
        client: Any,
        target: str,
        timeout: float,
        on_stderr: Callable[[str], None] | None = None,
    ) -> None:
        self._client = client
        # kubernetes' WSClient also copies all stdout/stderr into ``_all`` for ``read_all()`` (its
        # ``capture_all`` defaults to True and ``stream()`` cannot pass False): the whole snapshot would
        # stay in memory (measured: +450 MiB for 256 MiB). This class never calls read_all().
        if hasattr(client, "_all"):
            client._all = _IgnoredIO()
        self.target = target
        self._deadline = time.monotonic() + timeout
        self._timeout = timeout
        self._buffer = bytearray()
        self._on_stderr = on_stderr
        self.stderr_tail = ""
        self.bytes_read = 0
        self.stopped = False

    def _pump(self) -> bool:
        """Move one websocket frame into the buffers; False once the stream is closed."""
        if self.stopped:
            raise ExecError(f"the command in {self.target} was stopped (the task was killed)")
        if time.monotonic() > self._deadline:
            self.close()
            raise ExecError(f"command in {self.target} did not finish within {self._timeout:.0f}s")
        if not self._client.is_open():
            return False
        try:
            self._client.update(timeout=1)
        except Exception:
            # stop() closed the socket under this read (from the task's signal handler or another thread).
            if self.stopped:
                raise ExecError(f"the command in {self.target} was stopped (the task was killed)") from None
            raise
        if self._client.peek_channel(STDOUT_CHANNEL):
            self._buffer += self._as_bytes(self._client.read_channel(STDOUT_CHANNEL))
        if self._client.peek_channel(STDERR_CHANNEL):
            text = self._as_bytes(self._client.read_channel(STDERR_CHANNEL)).decode("utf-8", "replace")
            self.stderr_tail = (self.stderr_tail + text)[-_STDERR_TAIL:]
            if self._on_stderr:
                self._on_stderr(text)
        return True

    @staticmethod
    def _as_bytes(data: str | bytes) -> bytes:
        return data if isinstance(data, bytes) else data.encode("utf-8")

    def read(self, size: int = -1) -> bytes:
        """Read up to ``size`` bytes of stdout (all of it when ``size`` < 0); b"" at the end.

        :param size: the number of bytes wanted.
        """
        while (size < 0 or len(self._buffer) < size) and self._pump():
            pass
        if size < 0 or size >= len(self._buffer):
            data = bytes(self._buffer)
            self._buffer.clear()
        else:
            data = bytes(self._buffer[:size])
            del self._buffer[:size]
        self.bytes_read += len(data)
        return data

    def write_stdin(self, data: bytes) -> None:
        """Send bytes to the command's stdin (the exec must be opened with ``stdin=True``).

        :param data: the bytes.
        """
        self._client.write_stdin(data)

    def drain(self) -> None:
        """Wait for the command to end, discarding nothing (stdout stays readable)."""
        while self._pump():
            pass

    @property
    def returncode(self) -> int:
        """The exit code; raises ``ExecError`` when the stream ended without one (connection lost)."""
        raw = self._client.read_channel(ERROR_CHANNEL)
        status = yaml.safe_load(raw) if raw else None
        if not isinstance(status, dict):
            raise ExecError(
                f"exec stream of {self.target} ended without an exit status (connection lost?); "
                f"stderr: {self.stderr_tail[-500:]!r}"
            )
        if status.get("status") == "Success":
            return 0
        try:
            return int(status["details"]["causes"][0]["message"])
        except (KeyError, IndexError, TypeError, ValueError):
            raise ExecError(f"exec of {self.target} failed: {status.get('message', status)!r}") from None

    def close(self) -> None:
        """Close the websocket (idempotent)."""
        # Closing a dead socket is not an error worth raising.
        with contextlib.suppress(Exception):
            self._client.close()

    def stop(self) -> None:
        """Close the websocket for good: reads raise ``ExecError`` from now on (a reader such as an S3
        multipart upload aborts instead of storing what it got so far as the whole)."""
        self.stopped = True
        self.close()


@dataclass(frozen=True, eq=False)
class RunningExec:
    """An exec in progress: where it runs, its id in the pod (``EXEC_ID_VARIABLE``) and its stream.

    :param namespace: the pod's namespace.
    :param pod: the pod.
    :param container: the container.
    :param exec_id: the value of ``EXEC_ID_VARIABLE`` in its processes' environment.
    :param stream: its stream.
    """

    namespace: str
    pod: str
    container: str
    exec_id: str
    stream: ExecStream


class HostedClusterHook(KubernetesHook):
    """HostedClusters, their control-plane Deployments, etcd pods and exec, over the provider's hook.

    :param kubernetes_conn_id: the Kubernetes connection (``kubernetes_default``).
    """

    conn_name_attr = "kubernetes_conn_id"
    hook_name = "HostedCluster (HyperShift)"

    def __init__(self, kubernetes_conn_id: str = KubernetesHook.default_conn_name, **kwargs: Any) -> None:
        """Create the hook.

        :param kubernetes_conn_id: the Kubernetes connection id.
        :param kwargs: passed to ``KubernetesHook``.
        """
        super().__init__(conn_id=kubernetes_conn_id, **kwargs)
        self._running: set[RunningExec] = set()
        self._running_lock = threading.Lock()

    @staticmethod
    def _unless_not_found(call: Callable[[], T], missing: M = None) -> T | M:
        """``call()``, or ``missing`` when the API answers 404: the one way this hook treats an absent
        object. Every other error is raised, to the retries of the calling method.

        :param call: the API call.
        :param missing: what to return when the object is not there.
        """
        try:
            return call()
        except ApiException as err:
            if err.status == 404:
                return missing
            raise

    # ---- HostedClusters -------------------------------------------------------------------------

    @generic_api_retry
    def get_hosted_cluster(self, ref: ClusterRef) -> dict[str, Any]:
        """Read a HostedCluster.

        :param ref: the cluster.
        """
        return self.custom_object_client.get_namespaced_custom_object(
            HC_GROUP, HC_VERSION, ref.namespace, HC_PLURAL, ref.name
        )

    @generic_api_retry
    def list_node_pools(self, ref: ClusterRef) -> list[dict[str, Any]]:
        """The NodePools of a HostedCluster (those in its namespace whose ``spec.clusterName`` is it).

        :param ref: the cluster.
        """
        result = self.custom_object_client.list_namespaced_custom_object(
            HC_GROUP, HC_VERSION, ref.namespace, "nodepools"
        )
        items = result.get("items") or []
        return [np for np in items if (np.get("spec") or {}).get("clusterName") == ref.name]

    def find_hosted_cluster(self, ref: ClusterRef) -> dict[str, Any] | None:
        """Read a HostedCluster, or None when it does not exist.

        :param ref: the cluster.
        """
        return self._unless_not_found(lambda: self.get_hosted_cluster(ref))

    def hosted_cluster_exists(self, ref: ClusterRef) -> bool:
        """Whether the HostedCluster exists.

        :param ref: the cluster.
        """
        return self.find_hosted_cluster(ref) is not None

    @generic_api_retry
    def list_hosted_clusters(self, label_selector: str = "", namespace: str | None = None) -> list[dict]:
        """List HostedClusters (all namespaces unless ``namespace``).

        :param label_selector: a Kubernetes label selector; empty selects all.
        :param namespace: restrict to one namespace.
        """
        kwargs = {"label_selector": label_selector} if label_selector else {}
        if namespace:
            result = self.custom_object_client.list_namespaced_custom_object(
                HC_GROUP, HC_VERSION, namespace, HC_PLURAL, **kwargs
            )
        else:
            result = self.custom_object_client.list_cluster_custom_object(
                HC_GROUP, HC_VERSION, HC_PLURAL, **kwargs
            )
        return list(result.get("items", []))

    def _patch(self, ref: ClusterRef, body: Any, patch_type: PatchType) -> dict[str, Any]:
        return self.custom_object_client.patch_namespaced_custom_object(
            HC_GROUP,
            HC_VERSION,
            ref.namespace,
            HC_PLURAL,
            ref.name,
            body,
            _content_type=_PATCH_CONTENT_TYPES[patch_type],
        )

    @generic_api_retry
    def patch_hosted_cluster(self, ref: ClusterRef, body: Any, patch_type: PatchType = "merge") -> dict:
        """Patch a HostedCluster (idempotent patches only: transient errors are retried).

        :param ref: the cluster.
        :param body: a merge patch (dict) or a JSON patch (list of operations).
        :param patch_type: ``merge`` or ``json``.
        """
        return self._patch(ref, body, patch_type)

    @conditional_api_retry
    def patch_hosted_cluster_if_unchanged(
        self, ref: ClusterRef, body: dict[str, Any], resource_version: str
    ) -> dict[str, Any]:
        """Merge-patch only if the object is still at ``resource_version`` (else ApiException 409).

        :param ref: the cluster.
        :param body: a merge patch.
        :param resource_version: the version the decision was based on.
        """
        conditional = {**body, "metadata": {**body.get("metadata", {}), "resourceVersion": resource_version}}
        return self._patch(ref, conditional, "merge")

    @generic_api_retry
    def read_secret_data(self, namespace: str, name: str) -> dict[str, str]:
        """The base64 ``data`` of a Secret. Callers must not log or return it.

        :param namespace: the Secret's namespace.
        :param name: the Secret's name.
        """
        secret = self.core_v1_client.read_namespaced_secret(name, namespace)
        return dict(secret.data or {})

    @generic_api_retry
    def read_config_map_data(self, namespace: str, name: str) -> dict[str, str]:
        """The ``data`` of a ConfigMap (a drill copies the ones its source's spec references).

        :param namespace: the ConfigMap's namespace.
        :param name: the ConfigMap's name.
        """
        config_map = self.core_v1_client.read_namespaced_config_map(name, namespace)
        return dict(config_map.data or {})

    # ---- objects of a restore (added for the restore DAG) ------------------------------------------
    # Only the kinds ``hcp create cluster aws --render`` prints: a fixed table, no discovery, so the
    # RBAC of the Airflow identity can name exactly these.
    _RESTORE_CUSTOM_PLURALS = {"HostedCluster": "hostedclusters", "NodePool": "nodepools"}
    _RESTORE_CORE_KINDS = {"Namespace": "namespace", "Secret": "namespaced_secret",
                           "ConfigMap": "namespaced_config_map"}  # fmt: skip

    def _object_call(self, verb: str, api_version: str, kind: str, namespace: str | None, name: str,
                     body: dict[str, Any] | None = None) -> Any:  # fmt: skip
        if kind in self._RESTORE_CUSTOM_PLURALS:
            group, version = api_version.split("/", 1)
            plural = self._RESTORE_CUSTOM_PLURALS[kind]
            client = self.custom_object_client
            if verb == "create":
                return client.create_namespaced_custom_object(group, version, namespace, plural, body)
            call = getattr(client, f"{verb}_namespaced_custom_object")
            return call(group, version, namespace, plural, name)
        if api_version != "v1" or kind not in self._RESTORE_CORE_KINDS:
            raise ValueError(f"{api_version} {kind} is not a kind a restore handles")
        method = getattr(self.core_v1_client, f"{verb}_{self._RESTORE_CORE_KINDS[kind]}")
        scoped = kind != "Namespace"
        if verb == "create":
            return method(namespace, body) if scoped else method(body)
        return method(name, namespace) if scoped else method(name)

    def object_exists(self, api_version: str, kind: str, namespace: str | None, name: str) -> bool:
        """Whether an object exists.

        :param api_version: e.g. ``v1``.
        :param kind: e.g. ``Secret``.
        :param namespace: its namespace (None for Namespaces).
        :param name: its name.
        """
        return self.object_annotations(api_version, kind, namespace, name) is not None

    @generic_api_retry
    def object_annotations(
        self, api_version: str, kind: str, namespace: str | None, name: str
    ) -> dict[str, str] | None:
        """An object's annotations (``{}`` when it has none), or None when it does not exist.

        :param api_version: e.g. ``v1``.
        :param kind: e.g. ``Secret``.
        :param namespace: its namespace (None for Namespaces).
        :param name: its name.
        """
        verb = "read" if kind in self._RESTORE_CORE_KINDS else "get"
        obj = self._unless_not_found(lambda: self._object_call(verb, api_version, kind, namespace, name))
        if obj is None:
            return None
        # Core kinds come back as client models, custom objects as dicts.
        annotations = (
            obj["metadata"].get("annotations") if isinstance(obj, dict) else obj.metadata.annotations
        )
        return dict(annotations or {})

    @conditional_api_retry
    def create_object(self, obj: dict[str, Any]) -> None:
        """Create one object (ApiException 409 when it exists: never retried, never replaced).

        :param obj: the object (apiVersion, kind, metadata.name, metadata.namespace).
        """
        meta = obj["metadata"]
        self._object_call("create", obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"], obj)

    @generic_api_retry
    def delete_object(self, api_version: str, kind: str, namespace: str | None, name: str) -> bool:
        """Delete an object; False when it was already gone.

        :param api_version: e.g. ``v1``.
        :param kind: e.g. ``HostedCluster``.
        :param namespace: its namespace (None for Namespaces).
        :param name: its name.
        """

        def delete() -> bool:
            self._object_call("delete", api_version, kind, namespace, name)
            return True

        return self._unless_not_found(delete, missing=False)

    def create_objects(
        self, objects: list[dict[str, Any]], adopted: Collection[tuple[str, str]] = ()
    ) -> list[dict[str, Any]]:
        """Create objects in order, all or none: after a failure midway, what this call created is
        deleted again before the error is raised (a restore happens only when a cluster is created, so
        a retry must find nothing half-made).

        A Namespace that exists already is used as it is: it is not listed as created, so nothing
        here ever deletes it.

        :param objects: the objects, in creation order (apiVersion, kind, metadata.name, metadata.namespace).
        :param adopted: ``(kind, name)`` of objects that exist already and are the caller's own (an
            earlier try made them and could not undo them): listed as created, so an undo deletes them
            too, and not created again.
        :return: ``{"apiVersion", "kind", "namespace", "name"}`` of each object created or adopted, in
            order: what :meth:`delete_objects` takes.
        :raises ObjectExistsError: an object appeared meanwhile (409): never replaced.
        """
        created: list[dict[str, Any]] = []
        try:
            for obj in objects:
                meta = obj["metadata"]
                ident = {
                    "apiVersion": obj["apiVersion"],
                    "kind": obj["kind"],
                    "namespace": meta.get("namespace"),
                    "name": meta["name"],
                }
                if obj["kind"] == "Namespace" and self.object_exists("v1", "Namespace", None, meta["name"]):
                    continue
                if (obj["kind"], meta["name"]) in adopted:
                    created.append(ident)
                    continue
                try:
                    self.create_object(obj)
                except ApiException as err:
                    if err.status == 409:
                        raise ObjectExistsError(
                            f"{obj['kind']} {meta.get('namespace')}/{meta['name']}"
                        ) from None
                    raise
                created.append(ident)
        except BaseException:
            self.log.error("creation failed after %d object(s); deleting them again", len(created))
            left = self.delete_objects(created)
            if left:
                self.log.error("could not delete (remove by hand): %s", "; ".join(left))
            raise
        return created

    def delete_objects(self, objects: list[dict[str, Any]]) -> list[str]:
        """Delete objects in reverse order (as :meth:`create_objects` lists them); what could not be
        deleted is returned, not raised, so that one failure does not keep the rest.

        :param objects: ``{"apiVersion", "kind", "namespace", "name"}`` items.
        :return: ``Kind namespace/name: error`` of each object left.
        """
        left = []
        for ident in reversed(objects):
            where = f"{ident['kind']} {ident['namespace']}/{ident['name']}"
            try:
                gone = self.delete_object(
                    ident["apiVersion"], ident["kind"], ident["namespace"], ident["name"]
                )
            except Exception as err:
                left.append(f"{where}: {err}")
                continue
            self.log.info("%s %s", where, "deleted" if gone else "was already gone")
        return left

    @generic_api_retry
    def get_hosted_control_plane(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The HostedControlPlane ``name`` in the control-plane namespace, or None.

        :param namespace: the control-plane namespace.
        :param name: the HostedCluster's name.
        """
        return self._unless_not_found(
            lambda: self.custom_object_client.get_namespaced_custom_object(
                HC_GROUP, HC_VERSION, namespace, "hostedcontrolplanes", name
            )
        )

    # ---- control plane ----------------------------------------------------------------------------

    @generic_api_retry
    def get_deployment_replicas(self, namespace: str, name: str) -> tuple[int, int]:
        """``(spec.replicas, status.readyReplicas)`` of a Deployment.

        :param namespace: the control-plane namespace.
        :param name: the Deployment.
        """
        dep = self.apps_v1_client.read_namespaced_deployment(name, namespace)
        return int(dep.spec.replicas or 0), int((dep.status and dep.status.ready_replicas) or 0)

    @generic_api_retry
    def scale_deployment(self, namespace: str, name: str, replicas: int) -> None:
        """Set a Deployment's replicas through the scale subresource (idempotent).

        :param namespace: the control-plane namespace.
        :param name: the Deployment.
        :param replicas: the desired count.
        """
        self.apps_v1_client.patch_namespaced_deployment_scale(
            name, namespace, {"spec": {"replicas": int(replicas)}}
        )

    @generic_api_retry
    def get_deployment_selector(self, namespace: str, name: str) -> str:
        """The label selector of a Deployment's pods (``k=v,k2=v2``) from ``spec.selector.matchLabels``.

        :param namespace: the namespace.
        :param name: the Deployment.
        """
        dep = self.apps_v1_client.read_namespaced_deployment(name, namespace)
        labels = (dep.spec.selector and dep.spec.selector.match_labels) or {}
        if not labels:
            raise RuntimeError(f"Deployment {namespace}/{name} has no spec.selector.matchLabels")
        return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))

    @generic_api_retry
    def list_pods(self, namespace: str, label_selector: str) -> list[Any]:
        """Pods matching a selector.

        :param namespace: the namespace.
        :param label_selector: e.g. ``app=kube-apiserver``.
        """
        return list(self.core_v1_client.list_namespaced_pod(namespace, label_selector=label_selector).items)

    def list_etcd_pods(self, namespace: str) -> list[str]:
        """Names of the etcd member pods, sorted (``etcd-0``, ``etcd-1``, ...).

        :param namespace: the control-plane namespace.
        """
        return sorted(p.metadata.name for p in self.list_pods(namespace, ETCD_POD_SELECTOR))

    def pod_is_running(self, namespace: str, pod: str, container: str) -> bool:
        """Whether the pod is Running with ``container`` running.

        :param namespace: the namespace.
        :param pod: the pod.
        :param container: the container.
        """
        obj = self.get_pod(pod, namespace)
        if not obj.status or obj.status.phase != "Running":
            return False
        statuses = obj.status.container_statuses or []
        return any(s.name == container and s.state and s.state.running for s in statuses)

    # ---- exec -------------------------------------------------------------------------------------

    @generic_api_retry
    def _connect_exec(
        self, namespace: str, pod: str, container: str, command: list[str], binary: bool, stdin: bool = False
    ) -> Any:
        return kubernetes_stream(
            self.core_v1_client.connect_get_namespaced_pod_exec,
            name=pod,
            namespace=namespace,
            container=container,
            command=command,
            stdin=stdin,
            stdout=True,
            stderr=True,
            tty=False,
            binary=binary,
            _preload_content=False,
        )

    @contextmanager
    def open_exec(
        self,
        namespace: str,
        pod: str,
        command: list[str],
        container: str = ETCD_CONTAINER,
        timeout: float = 600,
        binary: bool = True,
        on_stderr: Callable[[str], None] | None = None,
        stdin: bool = False,
    ) -> Iterator[ExecStream]:
        """Start a command in a container and hand its streams over; closed on exit.

        Only the connection is retried here: a stream lost midway is the task's retry to handle,
        which is why every command we run is idempotent.

        :param namespace: the pod's namespace.
        :param pod: the pod.
        :param command: argv (no shell unless you include one).
        :param container: the container.
        :param timeout: seconds the command may take.
        :param binary: keep stdout as bytes.
        :param on_stderr: called with each stderr chunk.
        :param stdin: open the command's stdin (write with ``ExecStream.write_stdin``); secrets such as
            a presigned URL go this way, never on the command line.
        """
        target = f"{namespace}/{pod}[{container}]"
        exec_id = secrets.token_hex(8)
        # `env` puts the exec's id into the environment of the command and of every child it starts.
        argv = ["env", f"{EXEC_ID_VARIABLE}={exec_id}", *command]
        try:
            client = self._connect_exec(namespace, pod, container, argv, binary, stdin)
        except ApiException as err:
            raise ExecError(f"cannot exec in {target}: {err.status} {err.reason}") from err
        stream = ExecStream(client, target, timeout, on_stderr)
        running = RunningExec(namespace, pod, container, exec_id, stream)
        with self._running_lock:
            self._running.add(running)
        try:
            yield stream
        finally:
            with self._running_lock:
                self._running.discard(running)
            stream.close()

    def stop_execs(self) -> list[str]:
        """Stop every command this hook is running in a pod (a task's ``on_kill``); never raises.

        Each stream is closed first, as the provider's ``KubernetesPodExecOperator.on_kill`` does; the
        container runtime does not end a command whose stream is gone (runc keeps it running:
        opencontainers/runc#3359, kubernetes/kubernetes#89031), so each exec's processes are then
        ended in its pod, found by their ``EXEC_ID_VARIABLE``.

        :return: what could not be stopped, for the log.
        """
        with self._running_lock:
            running = list(self._running)
        for item in running:
            item.stream.stop()
        problems = []
        for item in running:
            try:
                self.stop_in_pod(item)
            except Exception as err:
                problems.append(f"{item.stream.target}: {type(err).__name__}: {str(err)[:200]}")
        return problems

    def stop_in_pod(self, running: RunningExec) -> None:
        """End the processes of one exec in its pod, whether its stream is open or not.

        :param running: the exec.
        """
        self.exec_command(
            running.namespace, running.pod, stop_command(running.exec_id), container=running.container,
            timeout=30,
        )  # fmt: skip

    def running_execs(self) -> list[RunningExec]:
        """The execs in progress."""
        with self._running_lock:
            return list(self._running)

    def exec_command(
        self,
        namespace: str,
        pod: str,
        command: list[str],
        container: str = ETCD_CONTAINER,
        timeout: float = 600,
        on_stdout_line: Callable[[str], None] | None = None,
        on_stderr: Callable[[str], None] | None = None,
        check: bool = True,
        max_stdout_bytes: int = 16 * 1024 * 1024,
    ) -> ExecResult:
        """Run a command to completion; stdout lines go to ``on_stdout_line`` or are collected.

        :param namespace: the pod's namespace.
        :param pod: the pod.
        :param command: argv.
        :param container: the container.
        :param timeout: seconds the command may take.
        :param on_stdout_line: when given, each stdout line is passed here and not collected.
        :param on_stderr: called with each stderr chunk.
        :param check: raise ``ExecError`` on a non-zero exit.
        :param max_stdout_bytes: collected stdout beyond this is an error (use ``on_stdout_line``).
        """
        collected = bytearray()
        pending = b""
        with self.open_exec(namespace, pod, command, container, timeout, True, on_stderr) as stream:
            while chunk := stream.read(64 * 1024):
                if on_stdout_line is None:
                    collected += chunk
                    if len(collected) > max_stdout_bytes:
                        raise ExecError(f"output of {stream.target} exceeds {max_stdout_bytes} bytes")
                    continue
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    on_stdout_line(line.decode("utf-8", "replace"))
            if pending and on_stdout_line is not None:
                on_stdout_line(pending.decode("utf-8", "replace"))
            code = stream.returncode
            result = ExecResult(code, collected.decode("utf-8", "replace"), stream.stderr_tail)
        if check and code != 0:
            raise ExecError(
                f"`{_describe(command)}` in {stream.target} exited with {code}: "
                f"{result.stderr_tail.strip()[-1000:] or '(no stderr)'}"
            )
        return result
