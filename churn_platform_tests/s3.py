"""A throwaway S3-compatible server (moto in server mode, over HTTP) on 127.0.0.1 for tests.

``running_moto(workdir)`` starts ``python -m moto.server`` on a free port as a subprocess,
waits until it answers, yields its endpoint URL, and stops it by its PID afterwards.
``s3_environment`` points the platform at a fresh bucket there through the usual AWS
variables and ``CHURN_STORAGE_URL``, the way a cluster would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from churn_platform_tests.postgres import free_port

START_TIMEOUT_SECONDS = 120.0
ACCESS_KEY_ID = "testing-key-id"
SECRET_ACCESS_KEY = "testing-secret"
REGION = "us-east-1"


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/moto-api/", timeout=5):
            return True
    except urllib.error.HTTPError:
        return True  # an HTTP answer of any status: the server is up
    except OSError:
        return False


@contextmanager
def running_moto(workdir: Path) -> Iterator[str]:
    """An S3 endpoint URL served by moto until the block ends."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = workdir / f"moto-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not _answers(url):
            if proc.poll() is not None:
                raise RuntimeError(f"moto server exited with {proc.returncode}: {log.read_text()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"moto server did not answer on {url}: {log.read_text()}")
            time.sleep(0.2)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def aws_environment(endpoint: str) -> dict[str, str]:
    """The AWS variables a pod would get from its Secret, pointing at ``endpoint``."""
    return {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_DEFAULT_REGION": REGION,
    }


def create_bucket(endpoint: str, bucket: str) -> None:
    """Create ``bucket`` on the server (as an operator would, before the platform runs)."""
    import boto3

    boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
        region_name=REGION,
    ).create_bucket(Bucket=bucket)


def list_keys(endpoint: str, bucket: str, prefix: str = "") -> list[str]:
    """Every object key in ``bucket`` under ``prefix``, sorted."""
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
        region_name=REGION,
    )
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [obj["Key"] for obj in page.get("Contents", [])]
    return sorted(keys)
