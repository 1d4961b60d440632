"""What a test process computes once that a deployment computes again in every task's process.

A worker of a deployment runs each task in a process of its own; a test process runs many tasks
(the harness in the pytest process, the forks of a fork server, each ``dag.test()`` all the tasks of
its runs). Two libraries redo the same pure work per use, and the suite spent a large part of its
tasks' CPU on it; :func:`install` makes a test process do each once:

- **botocore's models.** Each of the provider's AWS hooks makes a ``boto3.session.Session``, and
  each session a botocore ``Loader`` that reads and parses the service's JSON models again (S3's
  model, its endpoint rules, the partitions): 85 to 230 ms of CPU per client on 2 cores, against
  14 ms once parsed. Every session's ``Loader`` gets one cache of what it loaded (botocore's own
  ``instance_cache``), by search path: the same files, parsed once, the way one session already
  shares them between its clients. Each session keeps a ``Loader`` of its own (boto3 adds a search
  path to it). The models the operators use are loaded at once, so that forks inherit them parsed.
- **jsonschema's schema check.** ``Param.resolve`` calls ``jsonschema.validate``, which first checks
  the Param's schema against the metaschema (``check_schema``), 95% of its cost. Airflow resolves
  every Param of a task's copy of the DAG's Params whenever it compares or prints them, and its DAG
  serialization does both for every task: 704 resolves per serialization of the backup DAG, which
  ``dag.test()`` does for every run (0.2 s of CPU with 2020-12 schemas; the Params' draft-07,
  ``hcp_etcd.params.SCHEMA_DIALECT``, cut it to a fifth, and the check is still most of it). A
  schema that passed the check passes it again; so a check that passed is remembered (by the
  schema's JSON), one that fails runs every time. Every value is still validated against its schema.

Nothing else changes: credentials, endpoints, retries, requests and validation results are the
libraries' own.
"""

from __future__ import annotations

import json
from typing import Any

# The services the project's hooks make clients for (hooks/snapshot_store.py, hooks/kms.py).
SERVICES = ("s3", "kms")


def install() -> None:
    """Both caches of the module docstring (idempotent)."""
    share_loaded_models()
    check_schemas_once()


def share_loaded_models() -> None:
    """Patch ``create_loader`` where botocore's sessions call it, and load :data:`SERVICES`."""
    import boto3
    from botocore import loaders, session

    if session.create_loader is not loaders.create_loader:
        return  # installed, and loaded
    caches: dict[str | None, dict[Any, Any]] = {}

    def create_loader(search_path_string: str | None = None) -> loaders.Loader:
        loader = loaders.create_loader(search_path_string)
        # What botocore's instance_cache fills: keyed by method and arguments.
        loader._cache = caches.setdefault(search_path_string, {})
        return loader

    session.create_loader = create_loader
    warm = boto3.session.Session(aws_access_key_id="-", aws_secret_access_key="-", region_name="us-east-1")
    for service in SERVICES:
        warm.client(service, endpoint_url="http://127.0.0.1:9")  # no request: a client only


def check_schemas_once() -> None:
    """Remember the schemas each jsonschema validator class found valid (``check_schema``)."""
    from jsonschema import validators

    for cls in set(validators._VALIDATORS.values()):
        if getattr(cls.check_schema, "remembers", False):
            continue
        original = cls.check_schema
        passed: set[str] = set()

        def check_schema(
            schema: Any, *args: Any, _original: Any = original, _passed: set[str] = passed, **kwargs: Any
        ) -> None:
            if args or kwargs:  # a format checker of the caller's: not what validate() does
                _original(schema, *args, **kwargs)
                return
            try:
                key = json.dumps(schema, sort_keys=True)
            except (TypeError, ValueError):
                _original(schema)
                return
            if key not in _passed:
                _original(schema)  # raises SchemaError: not remembered
                _passed.add(key)

        check_schema.remembers = True  # type: ignore[attr-defined]
        cls.check_schema = staticmethod(check_schema)
