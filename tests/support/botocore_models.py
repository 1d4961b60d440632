"""One botocore data loader for every boto3 session of a test process.

Each of the provider's AWS hooks makes a ``boto3.session.Session`` of its own, and each session a
botocore ``Loader`` of its own, which reads and parses the service's JSON models again (S3's model,
its endpoint rules, the partitions): 80 to 230 ms of CPU for every client, measured on 2 cores,
against 5 ms for a client of a session whose loader has them. A worker process of a deployment pays
that once per task (each task is a process of its own); a test process that runs many tasks, or
forks them from one parent, pays it for every task. The test suite made it about a fifth of its
in-process tasks' CPU.

:func:`share_loaded_models` gives every session's ``Loader`` (botocore's ``create_loader``) one
cache of what it loaded, by search path: the same files, parsed once, the way a single session
already shares them between its clients. Each session keeps a ``Loader`` of its own (boto3 adds a
search path to its session's loader). It also loads the models the operators use, so that the forks
of a fork server inherit them parsed. Nothing else changes: credentials, endpoints, retries and
every request are each session's and client's own.
"""

from __future__ import annotations

from typing import Any

# The services the project's hooks make clients for (hooks/snapshot_store.py, hooks/kms.py).
SERVICES = ("s3", "kms")


def share_loaded_models() -> None:
    """Patch ``create_loader`` where botocore's sessions call it, and load :data:`SERVICES`."""
    import boto3
    from botocore import loaders, session

    if session.create_loader is loaders.create_loader:
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
