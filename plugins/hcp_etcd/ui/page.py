"""The HTML of the status page: ``templates/status.html`` (Jinja2, which Airflow ships), and the
formatting of its values (server-rendered, no JavaScript: it must work inside the UI's iframe and in
a headless browser alike)."""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jinja2

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


@functools.cache
def _environment() -> jinja2.Environment:
    """The templates next to this module, autoescaped (names and reasons come from outside)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(when=_when, age=human_age, size=human_bytes, seconds=_seconds)
    return env


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
    """The whole page (``templates/status.html``).

    :param rows: the status rows, worst first.
    :param counts: ``status.summary(rows)``.
    :param now: when the rows were collected.
    :param threshold: the staleness threshold.
    :param bucket: the bucket read.
    :param prefix: the prefix read.
    :param errors: problems met while collecting (shown, never hidden).
    :param dag_url: link to the backup DAG in the Airflow UI.
    """
    return (
        _environment()
        .get_template("status.html")
        .render(
            rows=rows,
            counts=counts,
            now=now,
            threshold_hours=f"{threshold.total_seconds() / 3600:g}",
            bucket=bucket,
            prefix=prefix,
            errors=errors,
            dag_url=dag_url,
            colours=STATE_COLOURS,
            labels=STATE_LABELS,
            refresh_seconds=REFRESH_SECONDS,
        )
    )
