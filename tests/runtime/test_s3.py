"""The S3 storage adapter against moto's server mode on 127.0.0.1.

moto is an EMULATOR of S3 (the most faithful S3 server that runs here without a
network: the same REST API, signatures, multipart uploads and x-amz-checksum-*
validation), not AWS.  It keeps objects in memory, so after a restart the test
recreates the bucket.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import boto3
import pytest
from oneiric._lifecycle.runtime import Runtime
from oneiric.adapters.pool import Unavailable
from oneiric.adapters.s3 import S3Storage
from oneiric.protocols import Storage
from planbuild import component, plan
from servers import Server, moto_server

pytestmark = pytest.mark.slow

KEYS = {"access_key_id": "test-key", "secret_access_key": "test-secret"}
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def moto() -> Iterator[Server]:
    yield from moto_server()


def endpoint(server: Server) -> str:
    return f"http://127.0.0.1:{server.port}"


def raw_client(server: Server) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint(server),
        region_name="us-east-1",
        aws_access_key_id=KEYS["access_key_id"],
        aws_secret_access_key=KEYS["secret_access_key"],
    )


def make_bucket(server: Server, name: str) -> None:
    raw_client(server).create_bucket(Bucket=name)


def storage(server: Server, bucket: str, **overrides: Any) -> S3Storage:
    make_bucket(server, bucket)
    settings: dict[str, Any] = {
        "bucket": bucket,
        "endpoint_url": endpoint(server),
        "addressing": "path",
        **KEYS,
    }
    settings.update(overrides)
    return S3Storage(**settings)


def test_path_style_round_trip(moto: Server) -> None:
    s3 = storage(moto, "path-bucket", prefix="shop/")
    assert isinstance(s3, Storage)
    assert s3.health()
    s3.put("a/b.txt", b"hello")
    s3.put("a/c.txt", b"world")
    assert s3.get("a/b.txt") == b"hello"
    assert s3.get("missing") is None
    assert s3.list() == ["a/b.txt", "a/c.txt"]
    assert s3.list("a/c") == ["a/c.txt"]
    listed = raw_client(moto).list_objects_v2(Bucket="path-bucket")["Contents"]
    assert sorted(o["Key"] for o in listed) == ["shop/a/b.txt", "shop/a/c.txt"]
    assert s3.delete("a/b.txt") is True
    assert s3.delete("a/b.txt") is False
    with pytest.raises(ValueError, match=r"without '\.\.'"):
        s3.put("../escape", b"x")
    s3.close()


def test_virtual_host_addressing(moto: Server) -> None:
    """bucket.localhost does not resolve here: requests go through moto as an HTTP proxy,
    which keeps the virtual-host URL (and Host header) the client built."""
    make_bucket(moto, "virtual-bucket")
    s3 = S3Storage(
        bucket="virtual-bucket",
        endpoint_url=f"http://localhost:{moto.port}",
        addressing="virtual",
        proxy=endpoint(moto),
        **KEYS,
    )
    s3.put("v.txt", b"virtual")
    assert s3.get("v.txt") == b"virtual"
    log = (moto.workdir / "server.log").read_text()
    assert f"PUT http://virtual-bucket.localhost:{moto.port}/v.txt" in log
    s3.close()


def test_multipart_upload_with_checksums(moto: Server) -> None:
    s3 = storage(moto, "big-bucket", multipart_threshold=5 * MiB, multipart_chunk=5 * MiB)
    data = bytes(range(256)) * (12 * MiB // 256)  # 12 MiB: three parts
    s3.put("big.bin", data)
    head = raw_client(moto).head_object(Bucket="big-bucket", Key="big.bin")
    assert head["ETag"].strip('"').endswith("-3")  # a multipart object of three parts
    assert s3.get("big.bin") == data
    s3.close()


def test_corrupted_object_is_refused(moto: Server) -> None:
    s3 = storage(moto, "corrupt-bucket")
    s3.put("x", b"original")
    stored = raw_client(moto).head_object(Bucket="corrupt-bucket", Key="x")["Metadata"]
    raw_client(moto).put_object(Bucket="corrupt-bucket", Key="x", Body=b"tampered", Metadata=stored)
    with pytest.raises(ValueError, match="SHA-256 mismatch"):
        s3.get("x")
    s3.close()


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="at least 5 MiB"):
        S3Storage(bucket="b", multipart_chunk=MiB)
    with pytest.raises(ValueError, match="addressing"):
        S3Storage(bucket="b", addressing="host")  # type: ignore[arg-type]


def test_server_going_away_and_coming_back(moto: Server) -> None:
    s3 = storage(moto, "gone-bucket", retries=0, connect_timeout=timedelta(seconds=1))
    s3.put("before", b"1")
    moto.stop()
    try:
        assert s3.health() is False
        started = time.monotonic()
        with pytest.raises(Unavailable, match=r"S3 bucket gone-bucket at http://127\.0\.0\.1"):
            s3.put("lost", b"2")
        assert time.monotonic() - started < 3
    finally:
        moto.start(timeout=60)
    make_bucket(moto, "gone-bucket")  # the emulator forgot everything
    assert s3.health()
    s3.put("after", b"3")
    assert s3.get("after") == b"3"
    s3.close()


@pytest.mark.anyio
async def test_live_swap_local_files_to_s3_under_load(
    moto: Server, tmp_path: Path, callers: Any
) -> None:
    make_bucket(moto, "swap-bucket")
    first = component(
        "adapter:storage",
        "local",
        impl="oneiric.adapters.localfs:LocalStorage",
        config={"root": str(tmp_path / "files")},
    )
    second = component(
        "adapter:storage",
        "s3",
        impl="oneiric.adapters.s3:S3Storage",
        config={
            "bucket": "swap-bucket",
            "endpoint_url": endpoint(moto),
            "addressing": "path",
            **KEYS,
        },
    )
    for c in (first, second):
        del c["config"]["tag"]
    runtime = Runtime()
    await runtime.apply(plan(first))
    files = runtime.handle("adapter:storage")

    def round_trip() -> bytes | None:
        files.put("k.txt", b"v")
        return files.get("k.txt")

    with callers(4, round_trip) as calls:
        await anyio.sleep(0.3)
        await runtime.apply(plan(second))
        await anyio.sleep(0.5)
    assert calls.failures == []
    assert calls.total > 10
    assert files.provider == "s3"
    assert raw_client(moto).get_object(Bucket="swap-bucket", Key="k.txt")["Body"].read() == b"v"
    await runtime.stop()
