"""boto3 against any S3-compatible endpoint, with errors turned into one line.

Credentials, profile and region come from the standard boto3 chain; only the
endpoint URL and region may be given by the config. Nothing here logs them.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

from gan_model.errors import GanflowError, TransientError

# Answers after which the same request may well succeed: the store is throttling, busy or
# failing over. botocore retries them itself first; what is left fails the step retryably.
TRANSIENT_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed",
                   "InternalError", "ServiceUnavailable", "RequestLimitExceeded", "TooManyRequests"}


def parse_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise GanflowError(f"{uri!r} is not an s3:// URI: use s3://bucket/prefix")
    bucket, _, prefix = uri[5:].partition("/")
    if not bucket:
        raise GanflowError(f"{uri!r} names no bucket: use s3://bucket/prefix")
    return bucket, prefix


def retry_settings() -> dict | None:
    """botocore's retry settings: the user's own (AWS_MAX_ATTEMPTS / AWS_RETRY_MODE or their profile)
    when they set any, else standard mode with 4 attempts."""
    import botocore.session

    if os.environ.get("AWS_MAX_ATTEMPTS") or os.environ.get("AWS_RETRY_MODE"):
        return None
    try:
        profile = botocore.session.Session().get_scoped_config()
    except Exception:  # e.g. a named profile that does not exist: boto3 says so on first use
        profile = {}
    if "max_attempts" in profile or "retry_mode" in profile:
        return None
    return {"mode": "standard", "max_attempts": 4}


def make_client(endpoint_url: str | None = None, region: str | None = None, max_pool: int = 16):
    import boto3
    from botocore.config import Config

    retries = retry_settings()
    config = Config(
        **({"retries": retries} if retries else {}),
        max_pool_connections=max_pool,
        connect_timeout=5,
        read_timeout=60,
    )
    try:
        return boto3.session.Session().client("s3", endpoint_url=endpoint_url, region_name=region, config=config)
    except ValueError as err:  # e.g. an endpoint without a scheme
        raise GanflowError(f"invalid S3 endpoint {endpoint_url!r} ({err}): use http(s)://host:port") from None


def describe_endpoint(endpoint_url: str | None) -> str:
    return endpoint_url or "the default AWS S3 endpoint"


@contextlib.contextmanager
def s3_errors(what: str, uri: str, endpoint_url: str | None) -> Iterator[None]:
    """Translate boto errors raised inside the block into a GanflowError with the fix."""
    from botocore.exceptions import (BotoCoreError, ClientError, ConnectTimeoutError, EndpointConnectionError,
                                     NoCredentialsError, ParamValidationError, PartialCredentialsError,
                                     ReadTimeoutError)

    where = describe_endpoint(endpoint_url)
    try:
        yield
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code", "")
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("NoSuchBucket",) or (code == "404" and what == "list"):
            raise GanflowError(f"bucket of {uri} does not exist at {where}: create it or fix data.source") from None
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"):
            raise GanflowError(f"S3 rejected the credentials ({code}) at {where}: check AWS_ACCESS_KEY_ID / "
                               f"AWS_SECRET_ACCESS_KEY or AWS_PROFILE") from None
        if code == "PreconditionFailed":
            raise GanflowError(f"{uri} changed while it was being ingested: run the ingest again") from None
        if code in ("AccessDenied", "AllAccessDisabled") or status == 403:
            raise GanflowError(f"access denied to {uri} at {where}: grant s3:ListBucket and s3:GetObject "
                                f"to these credentials") from None
        if code in TRANSIENT_CODES or (status or 0) >= 500:
            raise TransientError(f"S3 {what} of {uri} failed at {where} after retries ({code or status}): "
                                 f"the store is busy or failing; the step is retried") from None
        raise GanflowError(f"S3 {what} of {uri} failed at {where}: {code or status} "
                            f"{err.response.get('Error', {}).get('Message', '')}".rstrip()) from None
    except (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError) as err:
        raise TransientError(f"cannot reach the S3 endpoint {where} after retries ({type(err).__name__}): "
                            f"check data.endpoint_url and that the server is up") from None
    except (NoCredentialsError, PartialCredentialsError):
        raise GanflowError(f"no S3 credentials found for {where}: set AWS_ACCESS_KEY_ID and "
                            f"AWS_SECRET_ACCESS_KEY, or AWS_PROFILE") from None
    except ParamValidationError as err:
        raise GanflowError(f"invalid S3 request for {uri}: {str(err).splitlines()[-1]}") from None
    except BotoCoreError as err:
        raise GanflowError(f"S3 {what} of {uri} failed at {where} ({type(err).__name__}: {err})") from None


def download_file(uri: str, dest, endpoint_url: str | None = None, region: str | None = None):
    """Fetch one object to a local file (used for staged weights files)."""
    bucket, key = parse_s3_uri(uri)
    with s3_errors("download", uri, endpoint_url):
        make_client(endpoint_url, region).download_file(bucket, key, str(dest))
    return dest
