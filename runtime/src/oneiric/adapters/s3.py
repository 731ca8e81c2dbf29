"""S3-compatible object storage (boto3): path-style or virtual-host addressing, multipart
uploads for large objects, checksums end to end.

Extra: `oneiric-runtime[s3]`.  Objects are `<prefix><name>` in `bucket`.  `put` uploads in
one request up to `multipart_threshold` and in `multipart_chunk` parts above it (parts sent
`max_connections` at a time); the server verifies each request's `checksum`
(x-amz-checksum-*), and the object's whole SHA-256 is stored in its metadata and checked
again by `get`, so a corrupted or truncated read raises `ValueError` instead of returning
bad bytes.  Every request is bounded (`connect_timeout`, `timeout`, `retries` with botocore's
standard backoff); an unreachable endpoint raises `oneiric.adapters.pool.Unavailable`.
`endpoint_url` points it at any S3-compatible server (MinIO, Ceph, R2, or an emulator).
"""

from __future__ import annotations

import hashlib
import io
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

import boto3
import botocore.exceptions
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from oneiric.adapters.pool import Unavailable

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

Addressing = Literal["path", "virtual"]
Checksum = Literal["SHA256", "SHA1", "CRC32", "CRC32C"]
SHA256_KEY = "oneiric-sha256"
_UNREACHABLE = (
    botocore.exceptions.EndpointConnectionError,
    botocore.exceptions.ConnectTimeoutError,
    botocore.exceptions.ReadTimeoutError,
    botocore.exceptions.ConnectionClosedError,
    botocore.exceptions.ProxyConnectionError,
)


class S3Storage:
    def __init__(
        self,
        *,
        bucket: str,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        addressing: Addressing = "virtual",
        prefix: str = "",
        checksum: Checksum = "SHA256",
        multipart_threshold: int = 16 * 1024 * 1024,
        multipart_chunk: int = 8 * 1024 * 1024,
        max_connections: int = 10,
        connect_timeout: timedelta = timedelta(seconds=5),
        timeout: timedelta = timedelta(seconds=30),
        retries: int = 3,
        proxy: str | None = None,
    ) -> None:
        if addressing not in ("path", "virtual"):
            raise ValueError(f'addressing must be "path" or "virtual", not {addressing!r}')
        if multipart_chunk < 5 * 1024 * 1024:
            raise ValueError("multipart_chunk must be at least 5 MiB (S3's smallest part)")
        self.bucket = bucket
        self.prefix = prefix
        self.name = f"S3 bucket {bucket} at {endpoint_url or region}"
        self._checksum = checksum
        proxies = {"http": proxy, "https": proxy} if proxy else None
        config = Config(
            s3={"addressing_style": addressing},
            connect_timeout=connect_timeout.total_seconds(),
            read_timeout=timeout.total_seconds(),
            retries={"max_attempts": retries + 1, "mode": "standard"},
            max_pool_connections=max_connections,
            proxies=proxies,
            request_checksum_calculation="when_supported",
            response_checksum_validation="when_supported",
        )
        self._client: S3Client = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=config,
        )
        self._transfer = TransferConfig(
            multipart_threshold=multipart_threshold,
            multipart_chunksize=multipart_chunk,
            max_concurrency=max_connections,
            use_threads=max_connections > 1,
        )

    def _key(self, name: str) -> str:
        if not name or name.startswith("/") or ".." in name.split("/"):
            raise ValueError(f"object name {name!r} must be a relative path without '..'")
        return self.prefix + name

    def _call(self, what: str, call: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return call(*args, **kwargs)
        except _UNREACHABLE as exc:
            raise Unavailable(f"{self.name}: {what}: {exc}") from None

    def put(self, name: str, data: bytes) -> None:
        """Store `data` (multipart above the threshold); the server checks every part."""
        extra = {
            "ChecksumAlgorithm": self._checksum,
            "Metadata": {SHA256_KEY: hashlib.sha256(data).hexdigest()},
        }
        self._call(
            f"put {name}",
            self._client.upload_fileobj,
            io.BytesIO(data),
            self.bucket,
            self._key(name),
            ExtraArgs=extra,
            Config=self._transfer,
        )

    def get(self, name: str) -> bytes | None:
        """The object's bytes, verified against the SHA-256 stored at upload; None if absent."""
        key = self._key(name)
        try:
            answer = self._call(
                f"get {name}",
                self._client.get_object,
                Bucket=self.bucket,
                Key=key,
                ChecksumMode="ENABLED",
            )
        except self._client.exceptions.NoSuchKey:
            return None
        data: bytes = answer["Body"].read()
        expected = answer.get("Metadata", {}).get(SHA256_KEY)
        if expected is not None and hashlib.sha256(data).hexdigest() != expected:
            raise ValueError(f"{self.name}: {name}: SHA-256 mismatch; the object is corrupt")
        return data

    def delete(self, name: str) -> bool:
        """Delete the object; whether it existed."""
        key = self._key(name)
        if not self._exists(name, key):
            return False
        self._call(f"delete {name}", self._client.delete_object, Bucket=self.bucket, Key=key)
        return True

    def _exists(self, name: str, key: str) -> bool:
        try:
            self._call(f"head {name}", self._client.head_object, Bucket=self.bucket, Key=key)
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def list(self, prefix: str = "") -> list[str]:
        names: list[str] = []
        pages = self._client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix + prefix
        )
        for page in self._call("list", list, pages):
            names.extend(item["Key"][len(self.prefix) :] for item in page.get("Contents", []))
        return sorted(names)

    def health(self) -> bool:
        """A real request: HEAD of the bucket."""
        try:
            self._call("health", self._client.head_bucket, Bucket=self.bucket)
        except (Unavailable, botocore.exceptions.ClientError):
            return False
        return True

    def close(self) -> None:
        self._client.close()
