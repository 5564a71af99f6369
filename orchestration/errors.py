"""Setup errors in one line: what failed, where, and which setting to change.

botocore, DuckDB and Dagster report a wrong environment in their own terms:
``NoCredentialsError: Unable to locate credentials``, ``NoSuchBucket`` without the bucket,
``EndpointConnectionError`` without the variable that chose the endpoint,
``DagsterHomeNotSetError``. The functions here turn the exceptions a wrong environment causes
into one line naming the setting (``TOKENBILL_S3_BUCKET``, ``AWS_ENDPOINT_URL_S3``, the AWS
credentials chain, ``DAGSTER_HOME``, ``TOKENBILL_WAREHOUSE_PATH``) and the remedy. One owner:
``tokenbill check`` prints these lines, and the S3 listing of runs and sensors raises them.

:class:`SetupError` is a Dagster ``Failure``: a step that raises it fails with that one line
as the first line of its error, before any stack trace (the botocore exception stays
attached as its cause).
"""

from __future__ import annotations

import functools
import inspect
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar
from urllib.parse import urlsplit

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ReadTimeoutError,
)
from dagster import Failure

#: What an operator running outside the demo wrappers is told to do first.
ENV_FILE_HINT = "source .tokenbill/env (written by make demo and make ui)"
CREDENTIALS_CHAIN = (
    "AWS credentials chain (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, "
    "~/.aws/credentials or an instance role)"
)
_BAD_CREDENTIALS = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
    "InvalidClientTokenId",
}
_WRONG_REGION = {"PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraint"}


class SetupError(Failure):
    """A wrong environment, explained in one line (``str(error)`` is that line)."""

    def __init__(self, message: str):
        super().__init__(description=message, allow_retries=False)


def s3_endpoint() -> str:
    """The S3 endpoint boto3 uses, as the operator set it (for messages)."""
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        if os.environ.get(name):
            return f"{os.environ[name]} ({name})"
    return "AWS's regional endpoint (AWS_ENDPOINT_URL_S3 unset)"


def explain_s3(exc: BaseException, bucket: str, prefix: str = "") -> str | None:
    """One line for an S3 error a wrong setting causes; None for anything else."""
    where = f"s3://{bucket}/{prefix.strip('/') + '/' if prefix.strip('/') else ''}"
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return (
            f"no AWS credentials to read {where}: set them in the {CREDENTIALS_CHAIN}, "
            f"or {ENV_FILE_HINT} for the demo's S3 server"
        )
    if isinstance(exc, EndpointConnectionError | ConnectTimeoutError):
        url = urlsplit(getattr(exc, "kwargs", {}).get("endpoint_url") or "")
        endpoint = f"{url.scheme}://{url.netloc}" if url.netloc else s3_endpoint()
        if url.netloc and url.netloc in s3_endpoint():
            endpoint = s3_endpoint()  # the one the operator set, and the variable that set it
        return (
            f"cannot connect to the S3 endpoint {endpoint} to read {where}: set "
            f"AWS_ENDPOINT_URL_S3 to a reachable S3 endpoint (unset for AWS), or start the "
            f"demo's S3 server (make ui) and {ENV_FILE_HINT}"
        )
    if isinstance(exc, ReadTimeoutError):
        return (
            f"the S3 endpoint {s3_endpoint()} stopped answering while reading {where}: "
            "check the endpoint's health, then re-run"
        )
    if isinstance(exc, NoRegionError):
        return f"no AWS region for {where}: set AWS_DEFAULT_REGION (e.g. us-east-1)"
    if not isinstance(exc, ClientError):
        return None
    code = str(exc.response.get("Error", {}).get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code == "NoSuchBucket" or (code == "404" and exc.operation_name == "HeadBucket"):
        return (
            f"bucket {bucket!r} does not exist at {s3_endpoint()}: set TOKENBILL_S3_BUCKET "
            "to the bucket producers write to (or create it), or AWS_ENDPOINT_URL_S3 to the "
            "endpoint that has it"
        )
    if code in _BAD_CREDENTIALS:
        return (
            f"S3 at {s3_endpoint()} rejected the credentials ({code}) reading {where}: fix "
            f"them in the {CREDENTIALS_CHAIN}"
        )
    if code in _WRONG_REGION or status == 301:
        return (
            f"bucket {bucket!r} is in another region than the client's ({code or status}): "
            "set AWS_DEFAULT_REGION to the bucket's region"
        )
    if code in {"AccessDenied", "403", "AllAccessDisabled"} or status == 403:
        return (
            f"access denied to {where} at {s3_endpoint()}: the identity of the "
            f"{CREDENTIALS_CHAIN} needs s3:ListBucket and s3:GetObject on it (and "
            "s3:PutObject on TOKENBILL_EXPORT_PREFIX); or set TOKENBILL_S3_BUCKET"
        )
    return None


@contextmanager
def explained_s3_errors(bucket: str, prefix: str = "") -> Iterator[None]:
    """Re-raise the S3 errors a wrong environment causes as one-line :class:`SetupError`s."""
    try:
        yield
    except (BotoCoreError, ClientError) as exc:
        message = explain_s3(exc, bucket, prefix)
        if message is None:
            raise
        raise SetupError(message) from exc


F = TypeVar("F", bound=Callable)


def explains_s3_errors(fn: F) -> F:
    """Decorate a function taking the ``s3`` resource (an asset, a sensor, a helper): the S3
    errors a wrong environment causes leave it as one-line :class:`SetupError`s naming its
    bucket and prefix. Generators are wrapped as generators; the signature is kept (Dagster
    reads it for resources)."""
    signature = inspect.signature(fn)

    def where(args, kwargs) -> tuple[str, str]:
        s3 = signature.bind_partial(*args, **kwargs).arguments.get("s3")
        return str(getattr(s3, "bucket", "?")), str(getattr(s3, "prefix", ""))

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def generator(*args, **kwargs):
            with explained_s3_errors(*where(args, kwargs)):
                yield from fn(*args, **kwargs)

        return generator  # type: ignore[return-value]

    @functools.wraps(fn)
    def function(*args, **kwargs):
        with explained_s3_errors(*where(args, kwargs)):
            return fn(*args, **kwargs)

    return function  # type: ignore[return-value]


def explain_dagster_home(exc: BaseException | None = None) -> str | None:
    """One line for a missing or unusable ``DAGSTER_HOME``; None for anything else.

    Dagster's own error for an unset ``DAGSTER_HOME`` is not exported, so an error is told by
    what it says (its text names ``DAGSTER_HOME``) and the environment, not by its class.
    """
    home = os.environ.get("DAGSTER_HOME")
    if exc is not None and "DAGSTER_HOME" not in str(exc):
        return None
    if not home:
        return (
            f"DAGSTER_HOME is not set: {ENV_FILE_HINT}, or export DAGSTER_HOME=<a "
            "persistent directory> holding a dagster.yaml like orchestration/dagster.yaml"
        )
    return (
        f"DAGSTER_HOME={home} is not an existing directory: create it with a dagster.yaml "
        f"like orchestration/dagster.yaml, or {ENV_FILE_HINT}"
    )


def dagster_instance():
    """``DagsterInstance.get()`` (the instance of ``DAGSTER_HOME``), explained if it fails."""
    from dagster import DagsterError, DagsterInstance

    try:
        return DagsterInstance.get()
    except DagsterError as exc:
        message = explain_dagster_home(exc)
        if message is None:
            raise
        raise SetupError(message) from exc


_LOCK_HOLDER = re.compile(r"Conflicting lock is held in (?P<holder>.+?\(PID \d+\))", re.S)


def warehouse_lock_holder(exc: BaseException) -> str | None:
    """Who holds the warehouse's lock, as DuckDB tells it (program and PID), if it does."""
    match = _LOCK_HOLDER.search(str(exc))
    return " ".join(match["holder"].split()) if match else None


def explain_warehouse_lock(path: str, exc: BaseException, waited_seconds: float) -> str:
    """One line for a warehouse another process keeps locked."""
    holder = warehouse_lock_holder(exc) or "another process"
    waited = f" for {waited_seconds:.0f}s" if waited_seconds else ""
    return (
        f"the warehouse {path} (TOKENBILL_WAREHOUSE_PATH) is locked by {holder}{waited}: "
        "close that session (analysts read the published snapshot in TOKENBILL_ANALYST_DIR, "
        "never the warehouse) or wait for its run to finish"
    )
