"""The API's errors: :class:`ApiError` and its constructors, worded as the real API server words them.

Every room that answers a Kubernetes ``Status`` (the store, the schema checks, the API server, the
fault kinds) raises these; nothing here knows where it is raised.
"""

from __future__ import annotations

from typing import Any

from hcp_sandbox.resources import ResourceType


class ApiError(Exception):
    """An error the API answers as a Kubernetes ``Status`` object."""

    def __init__(
        self, code: int, reason: str, message: str, *, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict[str, Any]:
        """The ``Status`` body for this error."""
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body


def _details(rt: ResourceType, name: str, *, kind: str | None = None) -> dict[str, Any]:
    # The real server names the resource (plural) for NotFound/AlreadyExists/Conflict and the
    # Kind for Invalid; both carry the group.
    details: dict[str, Any] = {"name": name, "kind": kind or rt.plural}
    if rt.group:
        details["group"] = rt.group
    return details


def not_found(rt: ResourceType, name: str) -> ApiError:
    """``404 NotFound`` exactly as the API server words it."""
    return ApiError(404, "NotFound", f'{rt.group_resource} "{name}" not found', details=_details(rt, name))


def already_exists(rt: ResourceType, name: str) -> ApiError:
    """``409 AlreadyExists``."""
    return ApiError(
        409, "AlreadyExists", f'{rt.group_resource} "{name}" already exists', details=_details(rt, name)
    )


def conflict(rt: ResourceType, name: str) -> ApiError:
    """``409 Conflict`` for a stale ``resourceVersion`` (optimistic concurrency)."""
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {rt.group_resource} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again",
        details=_details(rt, name),
    )


def invalid(rt: ResourceType, name: str, causes: list[dict[str, str]]) -> ApiError:
    """``422 Invalid`` with one ``cause`` per field error."""
    kind = f"{rt.kind}.{rt.group}" if rt.group else rt.kind
    texts = [f"{c['field']}: {c['message']}" if c.get("field") else c["message"] for c in causes]
    summary = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    details = _details(rt, name, kind=rt.kind)
    details["causes"] = causes
    return ApiError(422, "Invalid", f'{kind} "{name}" is invalid: {summary}', details=details)


def bad_request(message: str) -> ApiError:
    """``400 BadRequest``."""
    return ApiError(400, "BadRequest", message)


def page_not_found() -> ApiError:
    """What the real server answers for a URL it does not serve."""
    return ApiError(404, "NotFound", "the server could not find the requested resource", details={})


def method_not_allowed() -> ApiError:
    """``405`` for a method the target does not take (e.g. POST to a named object)."""
    message = "the server does not allow this method on the requested resource"
    return ApiError(405, "MethodNotAllowed", message)


def unsupported_media_type(accepted: list[str]) -> ApiError:
    """``415`` as the API server words it (e.g. strategic merge patch on a custom resource)."""
    return ApiError(
        415,
        "UnsupportedMediaType",
        "the body of the request was in an unknown format - accepted media types include: "
        + ", ".join(accepted),
        details={},
    )
