"""How an S3 repository is reached: the options its URL may carry (:data:`S3_OPTIONS`, :data:`SSE_VALUES`),
the standard AWS environment (:func:`aws_client_kwargs`, also used for KMS) and :class:`S3Settings`, from which
both clients of a repository are built.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import fsspec

from aibackup.errors import ConfigError, ConnectorNotInstalledError

#: Server-side encryption settings an S3 repository URL may carry (``?sse=aws:kms&sse_kms_key_id=…``).
SSE_VALUES = ("AES256", "aws:kms", "aws:kms:dsse")
#: The options an S3 repository URL may carry: server-side encryption, and where and as whom it is reached
#: (``?endpoint=https://…&region=eu-west-1&profile=dr``; the standard AWS environment otherwise).
S3_OPTIONS = ("sse", "sse_kms_key_id", "endpoint", "region", "profile")


def aws_client_kwargs(service: str) -> dict[str, Any]:
    """``endpoint_url`` and ``region_name`` for an AWS client of `service` (``S3``, ``KMS``) from the
    standard environment: ``AWS_ENDPOINT_URL_<SERVICE>`` wins over ``AWS_ENDPOINT_URL``, ``AWS_REGION``
    over ``AWS_DEFAULT_REGION``; unset ones are left to botocore. ConfigError naming the variable for a
    value botocore would refuse."""
    kwargs: dict[str, Any] = {}
    for name in (f"AWS_ENDPOINT_URL_{service}", "AWS_ENDPOINT_URL"):
        if endpoint := os.environ.get(name):
            if problem := endpoint_problem(endpoint):
                raise ConfigError(f"{name}={without_credentials(endpoint)!r}: {problem}")
            kwargs["endpoint_url"] = endpoint
            break
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        if region := os.environ.get(name):
            if problem := region_problem(region):
                raise ConfigError(f"{name}={region!r}: {problem}")
            kwargs["region_name"] = region
            break
    return kwargs


def endpoint_problem(url: str) -> str | None:
    """Why `url` cannot be an S3 or KMS endpoint (botocore would refuse it with a bare ValueError), or None.
    What it says never quotes a user name or password the URL holds."""
    if _LOGIN.match(url):  # before urllib: its errors quote the netloc (`user:pass/word@…` fails on the port)
        return "holds a user name or password (S3 takes credentials from the AWS environment or a profile)"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises for a port that is not a number or out of range
    except ValueError as exc:
        return f"not a URL ({exc})"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "not an http:// or https:// URL with a host"
    if "@" in parts.netloc:  # botocore fails on it deep inside a request; messages would show it
        return "holds a user name or password (S3 takes credentials from the AWS environment or a profile)"
    try:
        from botocore.utils import is_valid_endpoint_url, is_valid_ipv6_endpoint_url
    except ImportError:  # no botocore: the client that needs it says so
        return None
    if not (is_valid_endpoint_url(url) or is_valid_ipv6_endpoint_url(url)):
        return "not a valid host name"
    return None


def without_credentials(text: str) -> str:
    """`text` (a URL, or one holding URLs) with the ``user:password@`` of every ``//host`` as ``***@``:
    what a message may show of a location given with credentials in it."""
    # Everything up to the last @ before the query: a password may hold a / (then urllib takes the rest for a
    # path) or an @. An s3:// location is left as it is: an @ in its prefix is a file name, not a login.
    return _LOGIN.sub(r"\1***@", text)


_LOGIN = re.compile(r"(https?://)[^?#\s]*@", re.IGNORECASE)


def region_problem(name: str) -> str | None:
    """Why `name` cannot be an AWS region name (botocore's rule), or None."""
    if re.fullmatch(r"[a-zA-Z0-9](?:[a-zA-Z0-9\-]{0,61}[a-zA-Z0-9])?", name):
        return None
    return "not a region name (letters, digits and dashes, like eu-west-1)"


@functools.cache
def _data_loader() -> Any:
    """One botocore data loader for the process: every session of it (the s3fs filesystem's aiobotocore
    session, the boto3 session of uploads) then parses S3's service model, endpoint rules and partitions
    once, not once a client (~0.06 s each; a backup or copy to S3 makes two clients). The loader only reads
    botocore's bundled JSON files (cached per loader, read-only afterwards), nothing of a session's own."""
    import botocore.loaders

    return botocore.loaders.create_loader()


def _botocore_session(cls: Any, profile: str | None) -> Any:
    """A new botocore (or aiobotocore: `cls`) session for `profile`, reading service data through the
    process's one loader."""
    session = cls(profile=profile) if profile else cls()
    session.register_component("data_loader", _data_loader())
    return session


@dataclass(frozen=True)
class S3Settings:
    """How an S3 repository is reached: from its URL's options (``?endpoint=…&region=…&profile=…``, for two
    repositories in two regions or on two S3-compatible services) over the standard AWS environment
    (:func:`aws_client_kwargs`), and what every object written carries (server-side encryption). Both
    clients of a repository are built from it: the s3fs filesystem (listings, small objects, ranged reads)
    and the boto3 client of parallel uploads (:mod:`aibackup.s3io`)."""

    client_kwargs: dict[str, Any]
    profile: str | None
    attempts: int
    additional: dict[str, str]

    @classmethod
    def of(
        cls,
        *,
        sse: str | None = None,
        sse_kms_key_id: str | None = None,
        endpoint: str | None = None,
        region: str | None = None,
        profile: str | None = None,
    ) -> S3Settings:
        client_kwargs = aws_client_kwargs("S3")
        if endpoint:
            client_kwargs["endpoint_url"] = endpoint
        if region:
            client_kwargs["region_name"] = region
        # Transient errors are retried with backoff (botocore "standard" mode); AWS_MAX_ATTEMPTS overrides.
        try:
            attempts = max(1, int(os.environ.get("AWS_MAX_ATTEMPTS") or 5))
        except ValueError:
            raise ConfigError("AWS_MAX_ATTEMPTS must be a whole number") from None
        # Server-side encryption: added to every PutObject and CreateMultipartUpload.
        additional: dict[str, str] = {}
        if sse:
            additional["ServerSideEncryption"] = sse
        if sse_kms_key_id:
            additional["SSEKMSKeyId"] = sse_kms_key_id
        return cls(client_kwargs, profile or None, attempts, additional)

    def _retries(self) -> dict[str, Any]:
        return {"retries": {"max_attempts": self.attempts, "mode": "standard"}}

    def filesystem(self) -> fsspec.AbstractFileSystem:
        try:
            import aiobotocore.session
            import s3fs
        except ImportError:
            raise ConnectorNotInstalledError("an s3:// repository needs s3fs: pip install 'aibackup[s3]'") from None
        # No listing cache: a manifest committed by another process must be seen by the next `list`.
        # No instance cache: the environment (endpoint, credentials) may change between calls in one process.
        # A session of its own each time (credentials are resolved per filesystem), sharing the data loader.
        fs = s3fs.S3FileSystem(
            session=_botocore_session(aiobotocore.session.AioSession, self.profile),
            s3_additional_kwargs=dict(self.additional) or None,
            client_kwargs=dict(self.client_kwargs),
            use_listings_cache=False,
            skip_instance_cache=True,
            config_kwargs=self._retries(),
        )
        fs.retries = self.attempts  # s3fs's own retry loop around botocore's, for errors botocore gives up on
        return fs

    def client(self) -> Any:
        """A boto3 S3 client with these settings (thread-safe; its pool holds s3io.CONCURRENCY x 2 connections)."""
        import boto3
        import botocore.config
        import botocore.session

        from aibackup import s3io

        session = boto3.session.Session(botocore_session=_botocore_session(botocore.session.Session, self.profile))
        config = botocore.config.Config(max_pool_connections=2 * s3io.CONCURRENCY, **self._retries())
        return session.client("s3", config=config, **self.client_kwargs)
