"""The HTML of the status page (server-rendered, no JavaScript: it must work inside the UI's iframe
and in a headless browser alike)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from html import escape

from hcp_etcd.status import STATE_DRILL_FAILED, STATE_NO_BACKUP, STATE_OK, STATE_STALE, ClusterStatus

# One colour per state; the browser test looks for the stale colour in the screenshot.
STATE_COLOURS: dict[str, tuple[str, str]] = {  # state -> (badge colour, row background)
    STATE_STALE: ("#d32f2f", "#fdecea"),
    STATE_DRILL_FAILED: ("#e65100", "#fff3e0"),
    STATE_NO_BACKUP: ("#8d6e00", "#fff8e1"),
    STATE_OK: ("#2e7d32", "#ffffff"),
}
STATE_LABELS = {
    STATE_STALE: "stale",
    STATE_DRILL_FAILED: "drill failed",
    STATE_NO_BACKUP: "no backup",
    STATE_OK: "ok",
}
REFRESH_SECONDS = 60


def human_bytes(size: int | None) -> str:
    """``1.5 GiB`` and so on.

    :param size: bytes or None.
    """
    if size is None:
        return "—"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover


def human_age(seconds: float | None) -> str:
    """``3 h 12 min``, ``2 d 4 h``.

    :param seconds: an age or None.
    """
    if seconds is None:
        return "—"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} s"


def _when(moment: datetime | None) -> str:
    return "—" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _row(row: ClusterStatus, dag_url: str) -> str:
    badge, background = STATE_COLOURS[row.state]
    cluster_note = ""
    if not row.on_management_cluster:
        cluster_note = '<div class="note">not on the management cluster</div>'
    if row.on_management_cluster and row.paused:
        cluster_note = '<div class="note">reconciliation paused</div>'
    if row.last_drill_passed is None:
        drill = "never"
    else:
        verdict = "passed" if row.last_drill_passed else "FAILED"
        drill = f'<span class="drill-{verdict.lower()}">{verdict}</span>'
        drill += f'<div class="note">{_when(row.last_drill_at)}</div>'
    backup = "no backup"
    if row.last_backup_at is not None:
        backup = (
            f"{_when(row.last_backup_at)}<div class=\"note\">{human_age(row.backup_age_seconds)} ago · "
            f"{row.backups} backup{'s' if row.backups != 1 else ''} · {escape(row.mode or '')}</div>"
        )
    reasons = "".join(f"<li>{escape(r)}</li>" for r in row.reasons)
    source = ""
    if row.manifest_uri:  # what the restore DAG takes as ``source``
        source = f'<div class="uri" title="source for hcp_etcd_restore">{escape(row.manifest_uri)}</div>'
    return (
        f'<tr class="state-{row.state}" data-cluster="{escape(row.ref)}" data-state="{row.state}" '
        f'style="background:{background}">'
        f'<td><a href="{escape(dag_url)}" target="_top">{escape(row.ref)}</a>{cluster_note}{source}</td>'
        f'<td><span class="badge" style="background:{badge}">{STATE_LABELS[row.state]}</span>'
        f'<ul class="reasons">{reasons}</ul></td>'
        f"<td>{backup}</td>"
        f'<td class="num">{human_bytes(row.size_bytes)}</td>'
        f'<td class="num">{"—" if row.revision is None else row.revision}</td>'
        f'<td class="num">{_seconds(row.api_downtime_seconds)}</td>'
        f"<td>{drill}</td>"
        f'<td class="num">{_seconds(row.drill_recovery_seconds)}</td>'
        f"<td>{_when(row.next_backup_at)}</td>"
        "</tr>"
    )


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:16px;color:#1a1a1a;
background:#fff}
h1{font-size:20px;margin:0 0 4px}
.meta{color:#555;font-size:13px;margin-bottom:12px}
.summary span{display:inline-block;margin-right:14px;font-size:14px}
.error{background:#fdecea;border:1px solid #d32f2f;padding:8px 12px;margin:8px 0;border-radius:4px}
table{border-collapse:collapse;width:100%;font-size:14px}
th{text-align:left;background:#f1f3f5;padding:8px;border-bottom:2px solid #ccc;white-space:nowrap}
td{padding:8px;border-bottom:1px solid #ddd;vertical-align:top}
td.num{text-align:right;white-space:nowrap}
.badge{display:inline-block;color:#fff;font-weight:600;padding:4px 10px;border-radius:4px;min-width:70px;
text-align:center}
.note{color:#666;font-size:12px}
.uri{color:#666;font-size:11px;font-family:monospace;word-break:break-all}
.reasons{margin:4px 0 0 16px;padding:0;font-size:12px;color:#444}
.drill-failed{color:#d32f2f;font-weight:700}
.drill-passed{color:#2e7d32;font-weight:600}
.empty{padding:24px;color:#555}
"""


def render_page(
    rows: list[ClusterStatus],
    counts: dict[str, int],
    *,
    now: datetime,
    threshold: timedelta,
    bucket: str,
    prefix: str,
    errors: list[str],
    dag_url: str,
) -> str:
    """The whole page.

    :param rows: the status rows, worst first.
    :param counts: ``status.summary(rows)``.
    :param now: when the rows were collected.
    :param threshold: the staleness threshold.
    :param bucket: the bucket read.
    :param prefix: the prefix read.
    :param errors: problems met while collecting (shown, never hidden).
    :param dag_url: link to the backup DAG in the Airflow UI.
    """
    body = "".join(_row(r, dag_url) for r in rows)
    if not rows:
        body = '<tr><td colspan="9" class="empty">No hosted cluster found, no backup in the bucket.</td></tr>'
    banner = "".join(f'<div class="error">{escape(e)}</div>' for e in errors)
    summary = " ".join(
        f'<span data-count="{state}"><b>{counts.get(state, 0)}</b> {label}</span>'
        for state, label in STATE_LABELS.items()
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{REFRESH_SECONDS}">
<title>hcp-etcd: etcd backups of hosted clusters</title>
<style>{_CSS}</style></head>
<body>
<h1>etcd backups of hosted clusters</h1>
<div class="meta">s3://{escape(bucket)}/{escape(prefix)} ·
stale after {threshold.total_seconds() / 3600:g} h · generated {_when(now)} ·
refreshes every {REFRESH_SECONDS} s · <a href="api/status">JSON</a></div>
<div class="summary" id="summary">{summary}</div>
{banner}
<table id="clusters">
<thead><tr><th>Hosted cluster</th><th>State</th><th>Last backup</th><th>Size</th><th>Revision</th>
<th>API downtime</th><th>Last drill</th><th>Recovery</th><th>Next backup</th></tr></thead>
<tbody>{body}</tbody></table>
</body></html>
"""
