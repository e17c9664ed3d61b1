"""The object-storage contract between the operator, the trainer and the serving init step: how an s3:// URI is
split, which keys of the referenced Secret reach a Pod (as environment variables, each by secretKeyRef), and
the result a storage check reports back (its Pod's termination message).

Key names follow KServe's S3 conventions, so a Secret made for KServe's storage initializer works here with its
connection settings moved from annotations into data keys (the operator never reads Secrets, see README):

    KServe annotation on the Secret          data key here (= the environment variable in the Pod)
    serving.kserve.io/s3-endpoint            S3_ENDPOINT (host[:port]) or AWS_ENDPOINT_URL (with scheme)
    serving.kserve.io/s3-usehttps            S3_USE_HTTPS ("0" = http)
    serving.kserve.io/s3-region              AWS_DEFAULT_REGION (or AWS_REGION)
    serving.kserve.io/s3-verifyssl           S3_VERIFY_SSL ("0" = do not verify TLS)
    serving.kserve.io/s3-usevirtualbucket    S3_USER_VIRTUAL_BUCKET ("1"/"true" virtual-hosted, "0" path-style)
    serving.kserve.io/s3-useanoncredential   awsAnonymousCredential ("true" = unsigned requests)
    serving.kserve.io/s3-cabundle            AWS_CA_BUNDLE (a CA file path inside the Pod)
"""

from __future__ import annotations

import json
import re
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, ValidationError

S3_SCHEME = "s3://"
# Bucket names as S3 allows them (3-63 lower-case letters, digits, dots, hyphens); the key may be empty.
S3_URI_PATTERN = r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?"
_S3_URI = re.compile(rf"^{S3_URI_PATTERN}$")

# Credentials: only ever referenced (secretKeyRef), never copied into a spec, status, log or Event.
ACCESS_KEY_ID = "AWS_ACCESS_KEY_ID"
SECRET_ACCESS_KEY = "AWS_SECRET_ACCESS_KEY"
SESSION_TOKEN = "AWS_SESSION_TOKEN"
CREDENTIAL_KEYS = (ACCESS_KEY_ID, SECRET_ACCESS_KEY, SESSION_TOKEN)
# Connection settings (KServe's environment names).
ENDPOINT_URL = "AWS_ENDPOINT_URL"
ENDPOINT = "S3_ENDPOINT"
USE_HTTPS = "S3_USE_HTTPS"
REGION = "AWS_DEFAULT_REGION"
REGION_ALT = "AWS_REGION"
VERIFY_SSL = "S3_VERIFY_SSL"
VIRTUAL_BUCKET = "S3_USER_VIRTUAL_BUCKET"
ANONYMOUS = "awsAnonymousCredential"
CA_BUNDLE = "AWS_CA_BUNDLE"
SETTING_KEYS = (ENDPOINT_URL, ENDPOINT, USE_HTTPS, REGION, REGION_ALT, VERIFY_SSL, VIRTUAL_BUCKET, ANONYMOUS,
                CA_BUNDLE)
SECRET_KEYS = CREDENTIAL_KEYS + SETTING_KEYS
# The Secret's name (not a credential): lets the Pod tell "no Secret" from "no credentials wanted".
SECRET_NAME_ENV = "KUBESTILL_S3_SECRET"


def is_s3(uri: str | None) -> bool:
    return bool(uri) and str(uri).startswith(S3_SCHEME)


def split_s3_uri(uri: str) -> tuple[str, str]:
    """s3://bucket/some/key -> ("bucket", "some/key"); the key has no leading or trailing slash."""
    if not _S3_URI.match(uri):
        raise ValueError(f"{uri}: not an s3:// URI with a valid bucket name (s3://<bucket>/<key>)")
    bucket, _, key = uri[len(S3_SCHEME):].partition("/")
    return bucket, key.strip("/")


class StorageReason(StrEnum):
    """Why a storage check failed: the condition reason the operator reports."""

    SECRET_NOT_FOUND = "SecretNotFound"
    SECRET_KEY_MISSING = "SecretKeyMissing"
    INVALID_CREDENTIALS = "InvalidCredentials"
    ACCESS_DENIED = "AccessDenied"
    BUCKET_NOT_FOUND = "BucketNotFound"
    OBJECT_NOT_FOUND = "ObjectNotFound"
    ENDPOINT_UNREACHABLE = "EndpointUnreachable"
    INVALID_URI = "InvalidURI"
    STORAGE_ERROR = "StorageError"


class CheckResult(BaseModel):
    """What `python -m kubestill_trainer.objectstore check` writes to its termination log (one JSON object)."""

    model_config = ConfigDict(extra="ignore")

    ok: bool = Field(description="Every URI was reachable as asked (read, or write).")
    reason: StorageReason | None = Field(default=None, description="Why not, when not ok.")
    uri: str = Field(default="", description="The URI that failed.")
    message: str = Field(default="", description="What failed, for humans; never a credential.")

    def to_text(self) -> str:
        return self.model_dump_json(exclude_none=True)


def parse_check_result(text: str) -> CheckResult | None:
    """The check's result from a termination message (the JSON object may follow other text); None if absent."""
    start = text.find("{")
    while start != -1:
        try:
            return CheckResult.model_validate(json.loads(text[start:]))
        except (ValueError, ValidationError):
            start = text.find("{", start + 1)
    return None
