"""The kubelet: pod statuses as a kubelet writes them (phase, conditions, container statuses).

Controllers say what a pod is (ready, initializing, its ``etcd-init`` running, completed or failed,
a container crashed); this room turns that into ``status`` and writes it through the ``status``
subresource, once per change of state.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from hcp_sandbox.controllers.cluster import ETCD_IMAGE, ClusterRuntime
from hcp_sandbox.errors import ApiError
from hcp_sandbox.store import Store, now_rfc3339


class Kubelet:
    """Writes pod statuses for every hosted cluster's pods."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def write_pod_status(
        self, rt: ClusterRuntime, pod: dict[str, Any], *, ready: bool, **kwargs: Any
    ) -> None:
        """Write a kubelet-style status when the pod's state changed since the last write.

        :param kwargs: :func:`pod_status`'s keyword arguments.
        """
        pname = pod["metadata"]["name"]
        state = (ready, tuple(sorted(kwargs.items())))
        if rt.pod_state.get(pname) == state:
            return
        rt.pod_state[pname] = state
        containers = [c["name"] for c in pod["spec"].get("containers", [])]
        status = pod_status(containers, ready=ready, **kwargs)
        with contextlib.suppress(ApiError):
            self.store.update_status("pods", pod["metadata"]["namespace"], pname, status)


def init_restarts(failed_at: float | None, now: float) -> int:
    """Restarts of a failing init container so far, on the kubelet's back-off (10 s doubling, 5 min cap).

    The sandbox does not run etcd-init again: it would fail the same way (the same URL, the same file).

    :param failed_at: monotonic time it first failed (None: it did not).
    :param now: monotonic time.
    """
    if failed_at is None:
        return 0
    elapsed, restarts, delay, at = now - failed_at, 0, 10.0, 10.0
    while at <= elapsed:
        restarts += 1
        delay = min(delay * 2, 300.0)
        at += delay
    return restarts


def pod_status(
    containers: list[str],
    *,
    ready: bool,
    initializing: bool = False,
    init: str | None = None,
    init_restarts: int = 0,
    crashed: str | None = None,
) -> dict[str, Any]:
    """A pod status as a kubelet writes it.

    :param init: the ``etcd-init`` init container (pods of a restore): ``running``, ``completed`` or
        ``failed`` (exit 1, then CrashLoopBackOff); None when the pod has none.
    :param init_restarts: its restart count when ``failed``.
    """
    now = now_rfc3339()
    init_failed = init == "failed"
    pending = initializing or init_failed

    def cstatus(name: str) -> dict[str, Any]:
        c_ready = ready and name != crashed
        if pending:
            state: dict[str, Any] = {"waiting": {"reason": "PodInitializing"}}
        elif name == crashed:
            state = {
                "waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": f"back-off 10s restarting failed container={name}",
                }
            }
        else:
            state = {"running": {"startedAt": now}}
        return {
            "name": name,
            "ready": c_ready,
            "started": "running" in state,
            "restartCount": 1 if name == crashed else 0,
            "state": state,
            "image": ETCD_IMAGE,
            "imageID": ETCD_IMAGE,
            "containerID": "cri-o://" + os.urandom(32).hex(),
        }

    def cond(ctype: str, ok: bool) -> dict[str, Any]:
        return {
            "type": ctype,
            "status": "True" if ok else "False",
            "lastProbeTime": None,
            "lastTransitionTime": now,
        }

    status: dict[str, Any] = {
        "phase": "Pending" if pending else "Running",
        "conditions": [
            cond("PodReadyToStartContainers", True),
            cond("Initialized", not pending),
            cond("Ready", ready and not pending),
            cond("ContainersReady", ready and not pending),
            cond("PodScheduled", True),
        ],
        "hostIP": "10.0.1.10",
        "hostIPs": [{"ip": "10.0.1.10"}],
        "podIP": f"10.128.{os.urandom(1)[0]}.{os.urandom(1)[0] % 250 + 2}",
        "qosClass": "Burstable",
        "startTime": now,
        "containerStatuses": [cstatus(n) for n in containers],
    }
    status["podIPs"] = [{"ip": status["podIP"]}]
    if init is not None:
        init_status: dict[str, Any] = {
            "name": "etcd-init",
            "ready": init == "completed",
            "restartCount": init_restarts if init_failed else 0,
            "started": init == "running",
            "image": ETCD_IMAGE,
            "imageID": ETCD_IMAGE,
            "containerID": "cri-o://" + os.urandom(32).hex(),
            "lastState": {},
        }
        if init == "running":
            init_status["state"] = {"running": {"startedAt": now}}
        elif init == "completed":
            init_status["state"] = {
                "terminated": {"exitCode": 0, "reason": "Completed", "startedAt": now, "finishedAt": now}
            }
        else:
            # The kubelet's back-off after a non-zero exit: waiting, the failed run in lastState
            # (terminationMessagePolicy File and no message file: no message, the log says why).
            back_off = min(10 * 2**init_restarts, 300)
            delay = f"{back_off // 60}m{back_off % 60}s" if back_off >= 60 else f"{back_off}s"
            init_status["state"] = {
                "waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": f"back-off {delay} restarting failed container=etcd-init",
                }
            }
            init_status["lastState"] = {
                "terminated": {"exitCode": 1, "reason": "Error", "startedAt": now, "finishedAt": now}
            }
        status["initContainerStatuses"] = [init_status]
    return status
