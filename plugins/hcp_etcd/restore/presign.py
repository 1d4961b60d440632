"""The presigned URL of a snapshot, checked against what HyperShift and etcd-init accept."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

from hcp_etcd.errors import RestoreInputError

# HyperShift's CRD: restoreSnapshotURL has at most 1 item of at most 1024 characters, ^(https|s3)://.
RESTORE_URL_MAX_LENGTH = 1024
# SigV4 presigned URLs live at most 7 days.
MAX_URL_EXPIRY_HOURS = 168
# A URL must stay valid at least this long after creation: etcd-init downloads when the pods start.
MIN_URL_VALIDITY = timedelta(minutes=15)


@dataclass(frozen=True)
class PresignedUrlInfo:
    """What a presigned URL says about itself (never the URL: it is a bearer credential).

    :param length: characters.
    :param expires_at: RFC3339 expiry.
    :param session_token: whether it carries an STS session token.
    """

    length: int
    expires_at: str
    session_token: bool


def check_presigned_url(
    url: str, now: datetime, min_validity: timedelta = MIN_URL_VALIDITY
) -> PresignedUrlInfo:
    """Refuse a URL that HyperShift or etcd-init would reject, saying why.

    :param url: the presigned GET URL.
    :param now: the current time (aware).
    :param min_validity: how long it must stay valid from ``now``.
    """
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    token = "X-Amz-Security-Token" in query
    if parts.scheme != "https":
        raise RestoreInputError(
            f"restoreSnapshotURL must be https:// (etcd-init downloads it), got {parts.scheme}://"
        )
    if query.get("X-Amz-Algorithm") != ["AWS4-HMAC-SHA256"]:
        raise RestoreInputError(
            "the presigned URL is not SigV4 (X-Amz-Algorithm=AWS4-HMAC-SHA256): SigV2 URLs "
            "fail in newer regions and are deprecated"
        )
    if len(url) > RESTORE_URL_MAX_LENGTH:
        why = (
            (
                " It carries an STS session token (X-Amz-Security-Token), which is what makes it long: "
                "set presign_aws_conn_id to a connection with the long-term keys of an IAM user that may "
                "only read snapshots (include/aws/presign-user.json), or use a shorter bucket/prefix."
            )
            if token
            else " Use a shorter bucket name or prefix."
        )
        raise RestoreInputError(
            f"the presigned URL is {len(url)} characters; HostedCluster spec.etcd.managed.storage."
            f"restoreSnapshotURL allows at most {RESTORE_URL_MAX_LENGTH}.{why}"
        )
    try:
        signed = datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        expires = signed + timedelta(seconds=int(query["X-Amz-Expires"][0]))
    except (KeyError, IndexError, ValueError):
        raise RestoreInputError("the presigned URL has no valid X-Amz-Date/X-Amz-Expires") from None
    if expires <= now:
        raise RestoreInputError(f"the presigned URL expired at {expires.isoformat()}")
    if expires - now < min_validity:
        raise RestoreInputError(
            f"the presigned URL expires at {expires.isoformat()}, less than {min_validity} from now: "
            "etcd-init "
            "may download it later than that"
        )
    return PresignedUrlInfo(len(url), expires.strftime("%Y-%m-%dT%H:%M:%SZ"), token)


def check_url_expiry_hours(hours: Any) -> int:
    """Validate ``url_expiry_hours`` (1..168, the SigV4 limit).

    :param hours: the Param value.
    """
    if isinstance(hours, bool) or not isinstance(hours, int | str) or not str(hours).isdigit():
        raise RestoreInputError(f"url_expiry_hours must be an integer, got {hours!r}")
    value = int(hours)
    if not 1 <= value <= MAX_URL_EXPIRY_HOURS:
        raise RestoreInputError(
            f"url_expiry_hours must be 1..{MAX_URL_EXPIRY_HOURS} (SigV4 limit), got {value}"
        )
    return value
