"""The sandbox's S3: moto's server mode over HTTPS, behind a fault-injection middleware.

Runs as its own process (``python -m hcp_sandbox.s3``) so a slow upload never blocks the API
server. moto keeps objects in memory and does NOT check signatures or presigned-URL expiry.

The ``s3`` fault kind (:mod:`hcp_sandbox.faults`) is applied here, by
:class:`~hcp_sandbox.faults.S3FaultMiddleware` in front of moto.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from hcp_sandbox.faults import S3FaultMiddleware


def serve(port_file: Path, cert: Path, key: Path, faults_file: Path, bucket: str, region: str) -> None:
    """Create the bucket, bind a free port, write it to ``port_file`` and serve forever."""
    from moto.backends import get_backend
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        create_backend_app,
    )
    from moto.server import MotoRequestHandler
    from werkzeug.serving import make_server

    get_backend("s3")[DEFAULT_ACCOUNT_ID]["global"].create_bucket(bucket, region)
    app = S3FaultMiddleware(DomainDispatcherApplication(create_backend_app), faults_file)
    server = make_server(
        "127.0.0.1",
        0,
        app,
        threaded=True,
        request_handler=MotoRequestHandler,
        ssl_context=(str(cert), str(key)),
    )
    tmp = port_file.with_suffix(".tmp")
    tmp.write_text(str(server.server_address[1]))
    tmp.replace(port_file)
    server.serve_forever()


class S3Server:
    """The S3 child process, as the serve process starts and stops it."""

    def __init__(
        self,
        root: Path,
        cert: Path,
        key: Path,
        faults_file: Path,
        bucket: str,
        log_file: Path,
        region: str = "us-east-1",
        name: str = "s3",
    ) -> None:
        """One moto process; ``name`` tells two apart (``s3``, ``s3-replica``) in their port files.

        :param region: the region the bucket is created in.
        """
        self.port_file = root / f"{name}.port"
        self.cert, self.key, self.faults_file = cert, key, faults_file
        self.bucket = bucket
        self.region = region
        self.log_file = log_file
        self.process: subprocess.Popen[bytes] | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        """Start the process and wait until it listens (``RuntimeError`` with its log otherwise)."""
        self.port_file.unlink(missing_ok=True)
        self.faults_file.write_text("[]")
        env = dict(os.environ)
        package_parent = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")]))
        argv = [
            sys.executable,
            "-m",
            "hcp_sandbox.s3",
            "--port-file",
            str(self.port_file),
            "--cert",
            str(self.cert),
            "--key",
            str(self.key),
            "--faults-file",
            str(self.faults_file),
            "--bucket",
            self.bucket,
            "--region",
            self.region,
        ]
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as out:
            self.process = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not self.port_file.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = self.log_file.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the S3 server did not start:\n{tail}")
            time.sleep(0.05)
        self.port = int(self.port_file.read_text())

    def stop(self, timeout: float = 10.0) -> None:
        proc = self.process
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.process = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hcp_sandbox.s3", description=__doc__)
    parser.add_argument("--port-file", type=Path, required=True)
    parser.add_argument("--cert", type=Path, required=True)
    parser.add_argument("--key", type=Path, required=True)
    parser.add_argument("--faults-file", type=Path, required=True)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--region", default="us-east-1")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s s3 %(levelname)s %(message)s")
    serve(args.port_file, args.cert, args.key, args.faults_file, args.bucket, args.region)
    return 0


if __name__ == "__main__":
    sys.exit(main())
