"""The s3:// result store: one object per key in a bucket, under an optional prefix.

Works with AWS S3 and with S3-compatible servers (MinIO, moto) through ASYA_S3_ENDPOINT.
Credentials come from the normal AWS chain (env, shared files, IRSA / pod identity), never
from the URL. botocore and aiohttp exceptions are translated into StoreError here and never
leave this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

try:
    import aioboto3  # type: ignore[import-untyped]
    import aiohttp
    from aiobotocore.config import AioConfig  # type: ignore[import-untyped]
    from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        f"the s3:// result store needs aioboto3: pip install 'asya[s3]' ({exc})"
    ) from exc

from asya_shared import env
from asya_shared.stores import base

SCHEME = "s3"
FORMS = "s3://bucket or s3://bucket/prefix"
DEFAULT_REGION = "us-east-1"

# The S3 naming rules for new buckets (3-63 characters, lower case, digits, '.', '-').
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
# A few attempts inside the SDK only: the sidecar redelivers an envelope whose store failed,
# so long retry chains here would just hold an envelope (and a concurrency slot) hostage.
_SDK_RETRIES = {"mode": "standard", "max_attempts": 3}
# What S3 answers for a missing object; "404" is what a HEAD or some compatible servers say.
_MISSING_OBJECT = ("NoSuchKey", "404", "NotFound")


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str  # "" or ends with "/"

    def object_key(self, key: str) -> str:
        return self.prefix + key

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


@dataclass(frozen=True)
class S3Settings:
    endpoint_url: str | None  # None: the AWS endpoint for the region
    region: str


def parse_url(url: str) -> S3Location:
    """`s3://bucket/some/prefix` -> S3Location("bucket", "some/prefix/")."""
    parts = urlsplit(url)
    if parts.scheme != SCHEME:
        raise ValueError(f"result store URL {url!r} is not an s3:// URL; use {FORMS}")
    if "@" in parts.netloc or ":" in parts.netloc:
        raise ValueError(
            f"result store URL {url!r}: put only the bucket after s3://; credentials come from "
            "the AWS chain (AWS_ACCESS_KEY_ID, shared files, pod identity) and the endpoint "
            f"from ASYA_S3_ENDPOINT; use {FORMS}"
        )
    if parts.query or parts.fragment:
        raise ValueError(
            f"result store URL {url!r}: a query or fragment is not allowed; use {FORMS}"
        )
    bucket = parts.netloc
    if not _BUCKET.match(bucket):
        raise ValueError(
            f"result store URL {url!r}: {bucket!r} is not a valid bucket name (3-63 lower-case "
            f"letters, digits, '.' and '-'); use {FORMS}"
        )
    segments = [segment for segment in parts.path.split("/") if segment]
    return S3Location(bucket=bucket, prefix="".join(f"{segment}/" for segment in segments))


def settings_from(environ: Mapping[str, str]) -> S3Settings:
    """Endpoint and region from the environment; credentials are left to botocore."""
    variable = env.S3_ENDPOINT
    endpoint = environ.get(variable, "").strip()
    if not endpoint:
        variable, endpoint = "AWS_ENDPOINT_URL", environ.get("AWS_ENDPOINT_URL", "").strip()
    if endpoint and urlsplit(endpoint).scheme not in ("http", "https"):
        raise ValueError(
            f"{variable}={endpoint!r} is not an http:// or https:// URL, "
            "e.g. http://minio.storage:9000"
        )
    region = environ.get("AWS_REGION", "").strip() or environ.get("AWS_DEFAULT_REGION", "").strip()
    return S3Settings(endpoint_url=endpoint or None, region=region or DEFAULT_REGION)


class S3Store:
    """A ResultStore keeping each key as an object. One client, opened on first use."""

    def __init__(self, location: S3Location, settings: S3Settings) -> None:
        self.location = location
        self.settings = settings
        self._client: Any = None
        self._stack = contextlib.AsyncExitStack()
        # Two envelopes arriving together must not both open a client.
        self._opening = asyncio.Lock()

    @classmethod
    def from_url(cls, url: str, environ: Mapping[str, str]) -> S3Store:
        return cls(parse_url(url), settings_from(environ))

    def __repr__(self) -> str:
        return f"S3Store({str(self.location)!r}, endpoint={self.settings.endpoint_url!r})"

    async def put(self, key: str, data: bytes) -> None:
        object_key = self.location.object_key(base.check_key(key))
        content_type = "application/json" if key.endswith(".json") else "application/octet-stream"
        try:
            client = await self._connected()
            await client.put_object(
                Bucket=self.location.bucket, Key=object_key, Body=data, ContentType=content_type
            )
        except (BotoCoreError, ClientError, aiohttp.ClientError) as exc:
            raise self._error("put", key, exc) from exc

    async def get(self, key: str) -> bytes | None:
        object_key = self.location.object_key(base.check_key(key))
        try:
            client = await self._connected()
            response = await client.get_object(Bucket=self.location.bucket, Key=object_key)
            async with response["Body"] as stream:
                data: bytes = await stream.read()
        except ClientError as exc:
            if _error_code(exc) in _MISSING_OBJECT:
                return None
            raise self._error("get", key, exc) from exc
        except (BotoCoreError, aiohttp.ClientError) as exc:
            raise self._error("get", key, exc) from exc
        return data

    async def list(self, prefix: str = "") -> list[str]:
        keys: list[str] = []
        start = self.location.prefix
        try:
            client = await self._connected()
            pages = client.get_paginator("list_objects_v2").paginate(
                Bucket=self.location.bucket, Prefix=start + prefix
            )
            async for page in pages:
                keys.extend(item["Key"][len(start) :] for item in page.get("Contents", ()))
        except (BotoCoreError, ClientError, aiohttp.ClientError) as exc:
            raise self._error("list", prefix, exc) from exc
        # Other tools may share the bucket: only names this store could have written count.
        return sorted(key for key in keys if base.is_valid_key(key))

    async def delete(self, key: str) -> None:
        object_key = self.location.object_key(base.check_key(key))
        try:
            client = await self._connected()
            # S3 answers a delete of a missing object with success: idempotent as it is.
            await client.delete_object(Bucket=self.location.bucket, Key=object_key)
        except (BotoCoreError, ClientError, aiohttp.ClientError) as exc:
            raise self._error("delete", key, exc) from exc

    async def close(self) -> None:
        self._client = None
        await self._stack.aclose()

    async def _connected(self) -> Any:
        if self._client is None:
            async with self._opening:
                if self._client is None:
                    self._client = await self._stack.enter_async_context(self._new_client())
        return self._client

    def _new_client(self) -> Any:
        options: dict[str, Any] = {"retries": _SDK_RETRIES}
        if self.settings.endpoint_url:
            # S3-compatible servers rarely serve bucket.host names; AWS accepts both styles.
            options["s3"] = {"addressing_style": "path"}
        session = aioboto3.Session(region_name=self.settings.region)
        return session.client(
            "s3", endpoint_url=self.settings.endpoint_url, config=AioConfig(**options)
        )

    def _error(self, action: str, key: str, exc: Exception) -> base.StoreError:
        where = f"{self.location}{key}"
        code = _error_code(exc) if isinstance(exc, ClientError) else ""
        if code == "NoSuchBucket":
            hint = f"; create bucket {self.location.bucket!r} or point the store at another one"
        elif code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            hint = "; check the AWS credentials and the bucket policy"
        else:
            hint = ""
        endpoint = self.settings.endpoint_url or f"AWS S3 in {self.settings.region}"
        return base.StoreError(
            f"cannot {action} {where} (endpoint {endpoint}): {type(exc).__name__}: {exc}{hint}"
        )


def _error_code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
