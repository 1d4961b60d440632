"""What an error may say, and whether a retry can fix it (pure, no I/O).

Two rules every task follows:

- **A configuration error fails at once.** A missing bucket, a bucket this connection may not write,
  an unknown connection, a HostedCluster that does not exist, a name that is not DNS-1123: the first
  try already knows, and three tries with 30 s between them only make the user wait minutes for the
  same message. Such errors become :class:`ConfigurationError` (an ``AirflowFailException``: the task
  fails without ``up_for_retry``). Transient errors (5xx, throttling, connection resets) are left as
  they are and keep their retries.
- **What is stored is redacted.** XCom and drill reports are clear text in the metadata DB and in
  S3: an exception's text can quote a presigned URL (an API 422 echoes the field) or lines of a
  rendered Secret (a YAML error quotes its context). :func:`redact` strips both.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any, TypeVar

from airflow.sdk.exceptions import AirflowFailException, AirflowNotFoundException

from hcp_etcd.naming import InvalidNameError

F = TypeVar("F", bound=Callable[..., Any])

# SigV4/SigV2 query parameters that make a URL a credential.
_SIGNED_PARAMS = re.compile(
    r"(?i)((?:X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token|Signature|AWSAccessKeyId)=)[^&\s\"']+"
)
# The same in an S3 error document (SignatureDoesNotMatch quotes the signature and the signed request).
_SIGNED_ELEMENTS = re.compile(
    r"(?is)(<(SignatureProvided|AWSAccessKeyId|StringToSign|StringToSignBytes|CanonicalRequest"
    r"|CanonicalRequestBytes)>).*?(</\2>)"
)
# Long runs of base64 with mixed case and digits: Secret data (a 32-byte AES key is 44 characters of
# base64), tokens, private keys. Not redacted: SHA-256 fingerprints (lowercase hex: they name a key
# without revealing it), words, and object keys (paths of short segments, which errors must name).
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{40,}={0,2}")


def _looks_secret(run: str) -> bool:
    mixed = any(c.isupper() for c in run) and any(c.islower() for c in run) and any(c.isdigit() for c in run)
    return mixed and max(len(segment) for segment in run.split("/")) >= 20


# S3 error codes that name a setting, not a passing fault (KMS codes come through S3 as these too).
S3_CONFIGURATION_CODES = frozenset(
    {
        "NoSuchBucket",
        "InvalidBucketName",
        "AccessDenied",
        "AllAccessDisabled",
        "AccountProblem",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AuthorizationHeaderMalformed",
        "PermanentRedirect",
        "KMS.NotFoundException",
        "KMS.DisabledException",
        "KMS.InvalidKeyUsageException",
        "KMS.AccessDeniedException",
        "InvalidEncryptionAlgorithmError",
        "InvalidObjectState",
    }
)
# Kubernetes API statuses no retry can change: 401/403 (credentials, RBAC). Not 404: a pod being
# recreated by its StatefulSet is briefly not there; a HostedCluster that does not exist is said by
# the code that asked for it (ConfigurationError). 409/429/5xx are left to the retries.
KUBERNETES_CONFIGURATION_STATUSES = frozenset({401, 403})


class ConfigurationError(AirflowFailException):
    """A setting or an input that no retry can fix: the task fails at once, with what to change."""


class RestoreInputError(ConfigurationError, ValueError):
    """Bad input to a restore: refused before anything is created, and not retried (no retry changes
    a manifest, a key or a target name)."""


def redact(text: str, limit: int = 1000) -> str:
    """Remove presigned-URL signatures, credentials and Secret-like data from a text; cut it to ``limit``.

    :param text: e.g. an exception message.
    :param limit: the most characters kept.
    """
    from airflow.sdk.log import redact as airflow_redact

    # Airflow's masker first: it knows every value this process passed to ``mask_secret`` (the key
    # read for escrow or restore, a presigned URL), whatever its shape.
    clean = str(airflow_redact(text))
    clean = _SIGNED_ELEMENTS.sub(r"\1REDACTED\3", _SIGNED_PARAMS.sub(r"\1REDACTED", clean))
    clean = _BASE64_RUN.sub(lambda m: "[REDACTED]" if _looks_secret(m[0]) else m[0], clean)
    return clean if len(clean) <= limit else clean[: limit - 1] + "…"


def describe(err: BaseException, limit: int = 1000) -> str:
    """A one-line, redacted description of an error, safe to store (XCom, reports).

    A YAML error keeps its problem and position, never the quoted line; everything else goes through
    :func:`redact`.

    :param err: the error.
    :param limit: the most characters kept.
    """
    text = str(err)
    mark = getattr(err, "problem_mark", None)
    if type(err).__module__.startswith("yaml") and mark is not None:
        # yaml's own text quotes the offending line, which may be a Secret's data: position only.
        what = " ".join(filter(None, [getattr(err, "context", None), getattr(err, "problem", None)]))
        text = f"{what} at line {mark.line + 1}, column {mark.column + 1}"
    return redact(f"{type(err).__name__}: {text}", limit)


def configuration_problem(err: BaseException) -> str | None:
    """Why ``err`` is a configuration error (no retry can fix it), or None when a retry may.

    :param err: the error a task raised.
    """
    if isinstance(err, ConfigurationError):
        return str(err)
    if isinstance(err, InvalidNameError):
        return str(err)
    if isinstance(err, AirflowNotFoundException):
        return f"{err} (define the connection in Airflow, or name another one in the DAG's Params)"
    code, status = _s3_code(err), getattr(err, "status", None)
    if code in S3_CONFIGURATION_CODES:
        return str(err)
    if type(err).__name__ in ("NoCredentialsError", "PartialCredentialsError", "NoRegionError"):
        return f"{err}: give the AWS connection credentials (or a role) and a region"
    if type(err).__name__ == "ApiException" and status in KUBERNETES_CONFIGURATION_STATUSES:
        return f"Kubernetes API answered {status} {getattr(err, 'reason', '')}".strip()
    # Our own errors wrap the client's with a clearer message (``raise RuntimeError(...) from err``).
    cause = err.__cause__
    if cause is None or cause is err or configuration_problem(cause) is None:
        return None
    return str(err) or configuration_problem(cause)


def _s3_code(err: BaseException) -> str | None:
    response = getattr(err, "response", None)
    if isinstance(response, dict):
        return (response.get("Error") or {}).get("Code")
    return None


def fail_fast_on_configuration_errors(method: F) -> F:
    """Decorate ``execute``: a configuration error becomes :class:`ConfigurationError` (no retries).

    The message is the error's own (redacted) with the reason it will not be retried; transient errors
    pass through unchanged and keep their retries.

    :param method: an operator's ``execute`` (or ``execute_complete``).
    """

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except ConfigurationError:
            raise
        except Exception as err:
            problem = configuration_problem(err)
            if problem is None:
                raise
            raise ConfigurationError(
                f"{redact(problem)} [a configuration error: not retried; fix it and run again]"
            ) from err

    return wrapper  # type: ignore[return-value]


class SplitBrainError(AirflowFailException):
    """A restore made several etcd clusters instead of one: no retry joins them (the runbook does)."""
