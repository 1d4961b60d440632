"""The sandbox's S3: moto's server mode over HTTPS, behind a fault-injection middleware.

Runs as its own process (``python -m hcp_sandbox.s3``) so a slow upload never blocks the API
server. moto keeps objects in memory and does NOT check signatures or presigned-URL expiry.

Faults come from ``DIR/s3-faults.json``, written by the serve process (``add_fault``) and consumed
here, one request at a time, under an ``flock``: answer the next N requests with an error code
(503 ``SlowDown``), or drop the connection after reading B bytes of the request body.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_REASONS = {500: "Internal Server Error", 503: "Slow Down", 403: "Forbidden", 404: "Not Found"}
_CODES = {500: "InternalError", 503: "SlowDown", 403: "AccessDenied", 404: "NoSuchKey"}


@contextlib.contextmanager
def _locked_faults(path: Path) -> Iterator[list[dict[str, Any]]]:
    """The pending fault list, locked; changes to the list are written back."""
    path.touch(exist_ok=True)
    with open(path, "r+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        text = fh.read()
        faults: list[dict[str, Any]] = json.loads(text) if text.strip() else []
        yield faults
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps(faults))


def add_fault(
    path: Path, *, count: int, code: int | None = None, drop: bool = False, after_bytes: int = 0
) -> None:
    """Queue a fault for the next ``count`` requests (called by the serve process)."""
    if count < 1 or (code is None) == (not drop):
        raise ValueError("an S3 fault needs count >= 1 and exactly one of code or drop")
    with _locked_faults(path) as faults:
        faults.append({"code": code, "drop": drop, "after_bytes": after_bytes, "remaining": count})


def _take_fault(path: Path) -> dict[str, Any] | None:
    with _locked_faults(path) as faults:
        if not faults:
            return None
        fault = dict(faults[0])
        faults[0]["remaining"] -= 1
        if faults[0]["remaining"] <= 0:
            faults.pop(0)
        return fault


StartResponse = Callable[..., Any]


class FaultMiddleware:
    """WSGI middleware in front of moto that applies the pending faults."""

    def __init__(self, app: Callable[..., Iterable[bytes]], faults_file: Path) -> None:
        self.app = app
        self.faults_file = faults_file

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        fault = _take_fault(self.faults_file)
        if fault is None:
            return self.app(environ, start_response)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        stream = environ["wsgi.input"]
        if fault["drop"]:
            # Read part of the body, as a server that dies mid-upload does, then cut the connection.
            remaining = min(fault["after_bytes"], length)
            while remaining > 0 and (chunk := stream.read(min(remaining, 65536))):
                remaining -= len(chunk)
            sock = environ.get("werkzeug.socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            log.warning("S3 fault: dropped %s %s", environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"))
            # werkzeug treats a ConnectionError as "client went away" and writes nothing more.
            raise ConnectionAbortedError("sandbox fault: connection dropped")
        # Drain the body so the keep-alive connection stays in sync, then answer the error. boto3
        # sends small PUTs chunked (aws-chunked, no Content-Length): drain those to their end too,
        # or the client sees a reset connection and retries instead of reading the error.
        if environ.get("wsgi.input_terminated"):
            while stream.read(65536):
                pass
        while length > 0 and (chunk := stream.read(min(length, 65536))):
            length -= len(chunk)
        code = int(fault["code"])
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{_CODES.get(code, 'InternalError')}</Code>"
            "<Message>Please reduce your request rate.</Message>"
            f"<Resource>{environ.get('PATH_INFO', '')}</Resource><RequestId>sandbox-fault</RequestId></Error>"
        ).encode()
        log.warning("S3 fault: %s for %s %s", code, environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"))
        start_response(
            f"{code} {_REASONS.get(code, 'Error')}",
            [
                ("Content-Type", "application/xml"),
                ("Content-Length", str(len(body))),
                ("Connection", "close"),
            ],
        )
        return [body]


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
    app = FaultMiddleware(DomainDispatcherApplication(create_backend_app), faults_file)
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
        self, root: Path, cert: Path, key: Path, faults_file: Path, bucket: str, log_file: Path
    ) -> None:
        self.port_file = root / "s3.port"
        self.cert, self.key, self.faults_file = cert, key, faults_file
        self.bucket = bucket
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
