"""AWS KMS for key slots: Encrypt and Decrypt of a 32-byte slot key, with the repository id as the
encryption context (CloudTrail shows which repository a Decrypt was for; a blob from another repository
does not decrypt).

Credentials, region and endpoint are the standard AWS ones (environment, profile, instance role);
``AWS_ENDPOINT_URL_KMS`` (else ``AWS_ENDPOINT_URL``) points at another endpoint, such as moto's server in
the tests. Errors become one line: a missing key or denied access is a ConfigError (exit 2: the key is
wrong or missing), an unreachable endpoint UnavailableError (exit 3).
"""

from __future__ import annotations

from typing import Any

from aibackup.errors import (
    AibackupError,
    ConfigError,
    ConnectorNotInstalledError,
    IntegrityError,
    UnavailableError,
    first_line,
)
from aibackup.s3_settings import aws_client_kwargs

_CONTEXT = "aibackup-repository"


def _client() -> Any:
    try:
        import boto3
    except ImportError:
        raise ConnectorNotInstalledError("a KMS key slot needs boto3: pip install 'aibackup[s3]'") from None
    return boto3.client("kms", **aws_client_kwargs("KMS"))


def encrypt(key_id: str, plaintext: bytes, repository_id: str) -> bytes:
    """KMS Encrypt of `plaintext` under `key_id` (ARN, key id or alias/NAME)."""
    try:
        answer = _client().encrypt(KeyId=key_id, Plaintext=plaintext, EncryptionContext={_CONTEXT: repository_id})
    except Exception as exc:
        raise _translate(exc, key_id, "Encrypt") from None
    blob: bytes = answer["CiphertextBlob"]
    return blob


def decrypt(key_id: str, blob: bytes, repository_id: str) -> bytes:
    """KMS Decrypt of a blob made by :func:`encrypt` for the same repository."""
    try:
        answer = _client().decrypt(CiphertextBlob=blob, KeyId=key_id, EncryptionContext={_CONTEXT: repository_id})
    except Exception as exc:
        raise _translate(exc, key_id, "Decrypt") from None
    plaintext: bytes = answer["Plaintext"]
    return plaintext


def _translate(exc: Exception, key_id: str, action: str) -> Exception:
    """One aibackup error for a botocore error (they share no base class importable without botocore)."""
    if isinstance(exc, AibackupError):
        return exc
    name = type(exc).__name__
    code = ""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = str(response.get("Error", {}).get("Code", ""))
    what = f"KMS {action} with key {key_id}"
    if name in ("NoCredentialsError", "PartialCredentialsError", "NoRegionError"):
        return ConfigError(f"{what}: no AWS credentials or region (set AWS_ACCESS_KEY_ID and AWS_REGION, or a profile)")
    if code in ("NotFoundException", "DisabledException", "KMSInvalidStateException", "ValidationException"):
        return ConfigError(f"{what}: {code} (check the key id and the key's state)")
    if code in ("AccessDeniedException", "AccessDenied", "UnrecognizedClientException"):
        return ConfigError(f"{what}: access denied to this key")
    if code in ("InvalidCiphertextException", "IncorrectKeyException"):
        return IntegrityError(f"{what}: the key slot's wrapped key does not decrypt (damaged, or another key)")
    transient = ("KMSInternalException", "DependencyTimeoutException", "ThrottlingException")
    if "Endpoint" in name or "Connect" in name or "Timeout" in name or code in transient:
        return UnavailableError(f"{what}: KMS unreachable ({first_line(exc)})")
    if code:
        return ConfigError(f"{what}: {code}")
    return UnavailableError(f"{what}: {type(exc).__name__}: {first_line(exc)}")
