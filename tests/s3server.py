"""A real S3 server on 127.0.0.1 for tests and benchmarks: moto's standalone server
(``python -m moto.server``, from the dev dependency group) in its own process, started by the
fixture and stopped after. voxflow reaches it the way it reaches any S3-compatible store: through
the standard ``AWS_ENDPOINT_URL`` / ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` /
``AWS_DEFAULT_REGION`` variables, read by s3fs and botocore.

Import the fixtures in a test module with ``from tests.s3server import bucket, s3_server``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class S3Server:
    """``python -m moto.server -H 127.0.0.1 -p PORT`` as a context manager."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = Path(tempfile.mkstemp(prefix="voxflow-moto-", suffix=".log")[1])

    @property
    def env(self) -> dict[str, str]:
        """The standard AWS variables that point a client at this server."""
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": "voxflow-test",
            "AWS_SECRET_ACCESS_KEY": "voxflow-test-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",  # never ask an instance-metadata address
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }

    def start(self, timeout_s: float = 30.0) -> S3Server:
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto server exited: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"moto server did not start on {self.url} within {timeout_s} s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.unlink(missing_ok=True)

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def new_bucket(prefix: str = "voxflow") -> str:
    """Create a uniquely named bucket on the server the environment points at; its URL."""
    import boto3

    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    boto3.client("s3").create_bucket(Bucket=name)  # us-east-1: no location constraint
    return f"s3://{name}"


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """One moto server for the session; the AWS_* variables point at it meanwhile."""
    server = S3Server().start()
    overrides = {**server.env, **{k: None for k in os.environ if k.startswith("VOXFLOW_S3_")}}
    overrides["AWS_PROFILE"] = None
    saved = {k: os.environ.get(k) for k in overrides}
    for key, value in overrides.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    try:
        yield server
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()


@pytest.fixture()
def bucket(s3_server: S3Server) -> str:
    """A fresh, empty bucket (``s3://voxflow-…``) on the session's server."""
    return new_bucket()
