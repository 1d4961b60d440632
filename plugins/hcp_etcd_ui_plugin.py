"""Airflow plugin: the hcp-etcd status page, a FastAPI app in the api-server plus a nav entry.

The app is at ``/hcp-etcd/`` of the api-server (HTML; ``/hcp-etcd/api/status`` is JSON) and the UI
shows it under Browse → "etcd backups" (an external view opened inside the UI).
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from hcp_etcd.ui import URL_PREFIX, create_app


class HcpEtcdUiPlugin(AirflowPlugin):
    """Registers the status page."""

    name = "hcp_etcd_ui"
    fastapi_apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "hcp-etcd status"}]
    external_views = [
        {
            "name": "etcd backups",
            "href": f"{URL_PREFIX}/",
            "destination": "nav",
            "category": "browse",
            "url_route": "hcp-etcd",
        }
    ]
