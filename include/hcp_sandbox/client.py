"""The one client of the sandbox's own API: ``/sandbox/v1`` (request log, faults) and its ``/version``.

The CLI (``python -m hcp_sandbox status|fault``), the reliability harness and the integration tests
all call the sandbox through this class, with the token and CA the sandbox issued. The Kubernetes
API itself is reached with the real clients (the kubernetes Python client, kubectl), never here.
The standard library's urllib is enough for a handful of JSON calls to one loopback HTTPS server,
and keeps the CLI free of dependencies beyond the sandbox's own.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any


class SandboxApiError(RuntimeError):
    """The sandbox answered with an HTTP error.

    :param status: the HTTP status.
    :param body: the decoded answer (a Kubernetes ``Status`` or the sandbox's own error).
    """

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"sandbox API answered {status}: {body}")
        self.status = status
        self.body = body


class SandboxClient:
    """Calls to one sandbox with a bearer token.

    :param server: the API server's ``https://`` URL.
    :param token: the bearer token.
    :param ca: the sandbox's CA certificate.
    """

    def __init__(self, server: str, token: str, ca: Path) -> None:
        self.server = server
        self.token = token
        self._ssl = ssl.create_default_context(cafile=str(ca))

    @classmethod
    def from_kubeconfig(cls, kubeconfig: Path, ca: Path) -> SandboxClient:
        """The client of a kubeconfig the sandbox wrote (its server and token).

        :param kubeconfig: the kubeconfig.
        :param ca: the sandbox's CA certificate.
        """
        import yaml

        config = yaml.safe_load(kubeconfig.read_text())
        return cls(config["clusters"][0]["cluster"]["server"], config["users"][0]["user"]["token"], ca)

    def request(self, method: str, path: str, body: Any = None, timeout: float = 30) -> tuple[int, Any]:
        """One request: ``(HTTP status, decoded JSON)``, errors included.

        :param method: HTTP method.
        :param path: e.g. ``/sandbox/v1/faults``.
        :param body: JSON body.
        :param timeout: seconds.
        """
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(f"{self.server}{path}", data=data, method=method, headers=headers)  # noqa: S310 - the sandbox's https URL
        try:
            with urllib.request.urlopen(req, context=self._ssl, timeout=timeout) as resp:  # noqa: S310
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def call(self, method: str, path: str, body: Any = None, timeout: float = 30) -> Any:
        """One request; the decoded answer, or :class:`SandboxApiError`.

        :param method: HTTP method.
        :param path: the path.
        :param body: JSON body.
        :param timeout: seconds.
        """
        status, answer = self.request(method, path, body, timeout)
        if status >= 400:
            raise SandboxApiError(status, answer)
        return answer

    def requests_since(self, seq: int) -> tuple[list[dict[str, Any]], int]:
        """Entries of the API request log after ``seq``, and the latest seq.

        :param seq: the last seq already seen.
        """
        data = self.call("GET", f"/sandbox/v1/requests?since={seq}")
        return data["items"], data["latest"]

    def seq(self) -> int:
        """The latest request seq."""
        return self.requests_since(10**12)[1]

    def post_fault(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Inject a fault (``POST /sandbox/v1/faults``; the kinds are in ``faults.py``).

        :param spec: the fault.
        """
        return self.call("POST", "/sandbox/v1/faults", spec)

    def clear_faults(self) -> dict[str, Any]:
        """Drop the API and exec faults not consumed yet (``DELETE /sandbox/v1/faults``)."""
        return self.call("DELETE", "/sandbox/v1/faults")
