"""The hcp-etcd page of the Airflow UI: a FastAPI app mounted in the api-server by ``hcp_etcd_ui_plugin``."""

from hcp_etcd.ui.app import URL_PREFIX, create_app

__all__ = ["URL_PREFIX", "create_app"]
