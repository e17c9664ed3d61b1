"""S3-compatible object storage for the trainer, the storage check and the serving init step.

One boto3 client, configured from the environment variables the operator puts in every Pod (KServe's names,
see `kubestill.api.storage`); transfers go through s3transfer, which streams multipart uploads and ranged
downloads a few parts at a time, so no file is ever held in memory whole. Every failure becomes a
`StoreError` carrying a `StorageReason` (BucketNotFound, ObjectNotFound, InvalidCredentials ...) and a message
that names the URI and never a credential.

A "tree" is what a URI names when it is not a single object: every object under `<key>/`. A tree written by
`upload_tree` ends with a manifest (`_manifest.json`, written last), so a reader sees either a complete tree or
none; `download_tree` follows the manifest when there is one and checks each file's size.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubestill.api import storage as contract
from kubestill.api.storage import StorageReason, split_s3_uri

MANIFEST = "_manifest.json"
MB = 1024 * 1024
_FALSE = ("0", "false", "no", "off")
_TRUE = ("1", "true", "yes", "on")

# Error codes S3 (AWS, MinIO, SeaweedFS) answers with, by what they mean for the user.
_CREDENTIAL_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken",
                     "TokenRefreshRequired", "AuthorizationHeaderMalformed", "InvalidSecurity", "InvalidClientTokenId"}
_DENIED_CODES = {"AccessDenied", "AllAccessDisabled", "AccountProblem", "403", "Forbidden"}
_NO_KEY_CODES = {"NoSuchKey", "404", "NotFound"}


class StoreError(Exception):
    """A storage operation that failed, with the reason the operator reports and the URI it concerns."""

    def __init__(self, reason: StorageReason, uri: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.uri = uri
        self.message = message

    def result(self) -> contract.CheckResult:
        return contract.CheckResult(ok=False, reason=self.reason, uri=self.uri, message=self.message)

    def at(self, uri: str) -> StoreError:
        """This error about `uri` (errors raised before any request, e.g. missing credentials, name none)."""
        return self if self.uri else StoreError(self.reason, uri, f"{uri}: {self.message}")


@dataclass(frozen=True)
class S3Config:
    """Connection settings and credentials, as the environment of a kubestill Pod gives them."""

    endpoint_url: str | None = None
    region: str | None = None
    addressing_style: str = "auto"  # virtual | path | auto
    verify: bool | str = True
    anonymous: bool = False
    secret_name: str | None = None
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    settings_found: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> S3Config:
        env = os.environ if env is None else env
        endpoint = _endpoint(env)
        verify: bool | str = env.get(contract.CA_BUNDLE) or True
        if (env.get(contract.VERIFY_SSL) or "1").lower() in _FALSE:
            verify = False
        return cls(
            endpoint_url=endpoint,
            region=env.get(contract.REGION) or env.get(contract.REGION_ALT) or None,
            addressing_style=_addressing_style(env, endpoint),
            verify=verify,
            anonymous=(env.get(contract.ANONYMOUS) or "").lower() in _TRUE,
            secret_name=env.get(contract.SECRET_NAME_ENV) or None,
            access_key_id=env.get(contract.ACCESS_KEY_ID) or None,
            secret_access_key=env.get(contract.SECRET_ACCESS_KEY) or None,
            session_token=env.get(contract.SESSION_TOKEN) or None,
            settings_found=any(env.get(k) for k in contract.SETTING_KEYS),
        )

    def missing_credentials(self) -> StoreError | None:
        """A Secret is named but its credentials did not arrive (the Secret or its keys are missing)."""
        if self.secret_name is None or self.anonymous:
            return None
        if self.access_key_id and self.secret_access_key:
            return None
        if not self.access_key_id and not self.secret_access_key and not self.settings_found:
            return StoreError(StorageReason.SECRET_NOT_FOUND, "",
                              f"Secret {self.secret_name!r} not found in the namespace (or it holds none of "
                              f"{contract.ACCESS_KEY_ID}, {contract.SECRET_ACCESS_KEY}, {contract.ENDPOINT_URL} ...)")
        missing = [k for k, v in ((contract.ACCESS_KEY_ID, self.access_key_id),
                                  (contract.SECRET_ACCESS_KEY, self.secret_access_key)) if not v]
        return StoreError(StorageReason.SECRET_KEY_MISSING, "",
                          f"Secret {self.secret_name!r} has no key {' or '.join(missing)} (set "
                          f"{contract.ANONYMOUS}: \"true\" for anonymous access)")


def _endpoint(env: Mapping[str, str]) -> str | None:
    """The endpoint URL: stated whole, or built from a host and the HTTPS switch (KServe's variables)."""
    endpoint = env.get(contract.ENDPOINT_URL) or None
    host = env.get(contract.ENDPOINT)
    if endpoint is None and host:
        scheme = "http" if env.get(contract.USE_HTTPS, "1").lower() in _FALSE else "https"
        endpoint = host if "://" in host else f"{scheme}://{host}"
    return endpoint


def _addressing_style(env: Mapping[str, str], endpoint: str | None) -> str:
    """virtual | path | auto, from the virtual-bucket switch when it is set."""
    virtual = (env.get(contract.VIRTUAL_BUCKET) or "").lower()
    if virtual in _TRUE:
        return "virtual"
    if virtual and virtual in _FALSE:
        return "path"
    # KServe's default for a custom endpoint (MinIO, SeaweedFS, Ceph) is path-style; AWS decides itself.
    return "path" if endpoint else "auto"


def _error_code(err: Exception) -> tuple[str, int]:
    response: dict[str, Any] = getattr(err, "response", None) or {}
    code = str((response.get("Error") or {}).get("Code") or "")
    status = int((response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0)
    return code, status


def classify(err: Exception, uri: str, config: S3Config) -> StoreError:
    """A botocore exception -> the StoreError a user can act on."""
    if isinstance(err, StoreError):
        return err
    secret = f"Secret {config.secret_name!r}" if config.secret_name else "the Pod's AWS credentials"
    where = config.endpoint_url or "AWS S3"
    return _before_the_server(err, uri, secret, where) or _server_said(err, uri, secret, where)


def _before_the_server(err: Exception, uri: str, secret: str, where: str) -> StoreError | None:
    """Failures botocore raises itself: no credentials to sign with, or no connection to the endpoint."""
    from botocore import exceptions as bx

    if isinstance(err, bx.NoCredentialsError | bx.PartialCredentialsError):
        return StoreError(StorageReason.SECRET_NOT_FOUND, uri, f"{uri}: no S3 credentials (name a Secret in "
                          "storageSecretRef, or give the Pods an AWS role)")
    if isinstance(err, bx.EndpointConnectionError | bx.ConnectTimeoutError | bx.ReadTimeoutError
                  | bx.ConnectionClosedError | bx.SSLError | bx.ProxyConnectionError):
        return StoreError(StorageReason.ENDPOINT_UNREACHABLE, uri,
                          f"{uri}: cannot reach the S3 endpoint {where} ({type(err).__name__}); check "
                          f"{contract.ENDPOINT_URL}/{contract.ENDPOINT} in {secret}")
    return None


def _server_said(err: Exception, uri: str, secret: str, where: str) -> StoreError:
    """Failures the S3 server answered, by its error code, else by HTTP status."""
    code, status = _error_code(err)
    if code == "NoSuchBucket":
        bucket = split_s3_uri(uri)[0] if contract.is_s3(uri) else "?"
        return StoreError(StorageReason.BUCKET_NOT_FOUND, uri, f"{uri}: bucket {bucket!r} does not exist at {where}")
    if code in _CREDENTIAL_CODES:
        return StoreError(StorageReason.INVALID_CREDENTIALS, uri,
                          f"{uri}: {where} rejected the credentials of {secret} ({code}); check "
                          f"{contract.ACCESS_KEY_ID} and {contract.SECRET_ACCESS_KEY}")
    if code in _DENIED_CODES or status == 403:
        return StoreError(StorageReason.ACCESS_DENIED, uri,
                          f"{uri}: access denied to the credentials of {secret} ({code or status})")
    if code in _NO_KEY_CODES or status == 404:
        return StoreError(StorageReason.OBJECT_NOT_FOUND, uri, f"{uri}: no such object")
    detail = " ".join(str(err).split())[:300]  # boto3's transfer errors wrap the server's answer in their text
    return StoreError(StorageReason.STORAGE_ERROR, uri,
                      f"{uri}: S3 error {code or status or type(err).__name__}" + (f": {detail}" if detail else ""))


def _tree_files(src: Path, skip: tuple[str, ...]) -> list[tuple[Path, str]]:
    """(path, relative posix path) of every file under `src` in sorted order, leaving out the manifest and the
    files and folders named in `skip` (relative paths)."""
    out = []
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        rel = path.relative_to(src).as_posix()
        if rel != MANIFEST and not any(rel == s or rel.startswith(f"{s}/") for s in skip):
            out.append((path, rel))
    return out


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str = ""


class ObjectStore:
    """An S3 client for kubestill's URIs; create it with the Pod's environment (the default)."""

    def __init__(self, config: S3Config | None = None, *, part_size: int = 16 * MB, concurrency: int = 4) -> None:
        self.config = config or S3Config.from_env()
        self.part_size = part_size
        self.concurrency = concurrency
        self._client: Any = None

    # --- plumbing --------------------------------------------------------------------------------------

    def client_for(self, uri: str) -> Any:
        try:
            return self.client
        except StoreError as err:
            raise err.at(uri) from None

    @property
    def client(self) -> Any:
        if self._client is None:
            missing = self.config.missing_credentials()
            if missing is not None:
                raise missing
            import boto3
            from botocore import UNSIGNED
            from botocore.config import Config

            cfg = Config(s3={"addressing_style": self.config.addressing_style},
                         retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=120,
                         signature_version=UNSIGNED if self.config.anonymous else None,
                         max_pool_connections=max(10, self.concurrency * 2))
            session = boto3.session.Session(
                aws_access_key_id=self.config.access_key_id, aws_secret_access_key=self.config.secret_access_key,
                aws_session_token=self.config.session_token, region_name=self.config.region or "us-east-1")
            self._client = session.client("s3", endpoint_url=self.config.endpoint_url, verify=self.config.verify,
                                          config=cfg)
        return self._client

    def _transfer(self) -> Any:
        from boto3.s3.transfer import TransferConfig

        return TransferConfig(multipart_threshold=self.part_size, multipart_chunksize=self.part_size,
                              max_concurrency=self.concurrency, use_threads=self.concurrency > 1)

    def _call(self, uri: str, fn: Any, **kwargs: Any) -> Any:
        try:
            return fn(**kwargs)
        except StoreError as err:
            raise err.at(uri) from None
        except Exception as err:
            raise classify(err, uri, self.config) from None

    # --- single objects ---------------------------------------------------------------------------------

    def head(self, uri: str) -> ObjectInfo:
        """The object's size and ETag. HEAD answers carry no error code, so a 404 or 403 is asked again of
        the bucket (a listing answers NoSuchBucket / InvalidAccessKeyId / AccessDenied with a body)."""
        bucket, key = split_s3_uri(uri)
        try:
            found = self.client.head_object(Bucket=bucket, Key=key)
        except StoreError as err:
            raise err.at(uri) from None
        except Exception as err:
            code, status = _error_code(err)
            if status not in (403, 404) or code not in ("403", "404", "Forbidden", "NotFound", ""):
                raise classify(err, uri, self.config) from None
            self._call(uri, self.client_for(uri).list_objects_v2, Bucket=bucket, Prefix=key, MaxKeys=1)
            if status == 404:
                raise StoreError(StorageReason.OBJECT_NOT_FOUND, uri, f"{uri}: no such object") from None
            raise StoreError(StorageReason.ACCESS_DENIED, uri, f"{uri}: access denied (HEAD 403)") from None
        return ObjectInfo(key, int(found.get("ContentLength") or 0), str(found.get("ETag") or "").strip('"'))

    def get_bytes(self, uri: str) -> bytes:
        bucket, key = split_s3_uri(uri)
        body = self._call(uri, self.client_for(uri).get_object, Bucket=bucket, Key=key)["Body"]
        try:
            data: bytes = body.read()
        finally:
            body.close()
        return data

    def put_bytes(self, uri: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        bucket, key = split_s3_uri(uri)
        self._call(uri, self.client_for(uri).put_object, Bucket=bucket, Key=key, Body=data, ContentType=content_type)

    def download_file(self, uri: str, dest: Path) -> int:
        """Stream one object to `dest` (written under a temporary name, renamed when complete)."""
        bucket, key = split_s3_uri(uri)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.part")
        try:
            self._call(uri, self.client_for(uri).download_file, Bucket=bucket, Key=key, Filename=str(tmp),
                       Config=self._transfer())
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return dest.stat().st_size

    def upload_file(self, src: Path, uri: str) -> int:
        """Stream one file to `uri` (multipart above the part size; the object appears only when complete)."""
        bucket, key = split_s3_uri(uri)
        self._call(uri, self.client_for(uri).upload_file, Filename=str(src), Bucket=bucket, Key=key,
                   Config=self._transfer())
        return src.stat().st_size

    # --- trees ------------------------------------------------------------------------------------------

    def list(self, uri: str) -> dict[str, ObjectInfo]:
        """Objects under `<uri>/`, by path relative to it."""
        bucket, key = split_s3_uri(uri)
        prefix = f"{key}/" if key else ""
        out: dict[str, ObjectInfo] = {}
        paginator = self.client_for(uri).get_paginator("list_objects_v2")
        pages = self._call(uri, paginator.paginate, Bucket=bucket, Prefix=prefix)
        try:
            for page in pages:
                for obj in page.get("Contents") or []:
                    rel = str(obj["Key"])[len(prefix):]
                    if rel and not rel.endswith("/"):
                        out[rel] = ObjectInfo(str(obj["Key"]), int(obj.get("Size") or 0),
                                              str(obj.get("ETag") or "").strip('"'))
        except StoreError:
            raise
        except Exception as err:
            raise classify(err, uri, self.config) from None
        return out

    def read_manifest(self, uri: str) -> dict[str, Any] | None:
        """The manifest of the tree at `uri`, None when it has none (not written, or not complete yet)."""
        try:
            data = json.loads(self.get_bytes(join(uri, MANIFEST)))
        except StoreError as err:
            if err.reason == StorageReason.OBJECT_NOT_FOUND:
                return None
            raise
        return data if isinstance(data, dict) else None

    def manifest_files(self, uri: str) -> dict[str, ObjectInfo] | None:
        """Files of the complete tree at `uri` as its manifest lists them; None when it has no manifest, or an
        incomplete one (being written, or its writer died)."""
        manifest = self.read_manifest(uri)
        if manifest is None or manifest.get("complete") is False:
            return None
        base = split_s3_uri(uri)[1]
        return {rel: ObjectInfo(f"{base}/{entry['key']}".lstrip("/"), int(entry["size"]))
                for rel, entry in (manifest.get("files") or {}).items()}

    def tree_files(self, uri: str) -> dict[str, ObjectInfo]:
        """Files of the tree at `uri`: the manifest's when it has one, else every object under it (a tree
        uploaded by other tools)."""
        manifest = self.read_manifest(uri)
        if manifest is not None and manifest.get("complete") is False:
            raise _incomplete(uri)
        listed = self.manifest_files(uri)
        if listed is not None:
            return listed
        return {rel: info for rel, info in self.list(uri).items() if rel != MANIFEST}

    def download_tree(self, uri: str, dest: Path, files: Mapping[str, ObjectInfo] | None = None) -> int:
        """Every file of the tree under `dest`, sizes checked against the listing or manifest."""
        files = self.tree_files(uri) if files is None else files
        bucket = split_s3_uri(uri)[0]
        total = 0
        root = dest.resolve()
        for rel, info in sorted(files.items()):
            obj_uri = f"s3://{bucket}/{info.key}"
            if not (root / rel).resolve().is_relative_to(root):  # a manifest or key naming ../ or /abs
                raise StoreError(StorageReason.STORAGE_ERROR, uri,
                                 f"{uri}: refusing {rel!r}: it would be written outside the destination")
            got = self.download_file(obj_uri, dest / rel)
            if got != info.size:
                raise StoreError(StorageReason.STORAGE_ERROR, obj_uri,
                                 f"{obj_uri}: downloaded {got} bytes, the manifest says {info.size}")
            total += got
        return total

    def upload_tree(self, src: Path, uri: str, version: str | None = None,
                    skip: tuple[str, ...] = ()) -> dict[str, Any]:
        """Upload every file under `src`, then the manifest (last: its presence marks the tree complete).

        Without `version` the files keep their paths and the old manifest is removed first, so a reader never
        pairs it with half-replaced files. With a `version` the files go under `<version>/` and the previous
        version's objects are deleted only after the new manifest is in place: a kill at any moment leaves one
        complete version readable (how checkpoints are kept).
        """
        if version is None:
            # Readers refuse a tree whose manifest says incomplete, so a kill below never leaves old and new
            # files mixed under a plain listing.
            self._mark_incomplete(uri)
        entries: dict[str, Any] = {}
        for path, rel in _tree_files(src, skip):
            key_rel = f"{version}/{rel}" if version else rel
            entries[rel] = {"key": key_rel, "size": self.upload_file(path, join(uri, key_rel))}
        manifest = {"version": version or "", "complete": True, "files": entries}
        self.put_bytes(join(uri, MANIFEST), json.dumps(manifest, indent=1).encode(), "application/json")
        if version is not None:
            keep = {e["key"] for e in entries.values()} | {MANIFEST}
            self.delete_many(uri, [rel for rel in self.list(uri) if rel not in keep])
        return manifest

    def delete(self, uri: str) -> None:
        bucket, key = split_s3_uri(uri)
        self._call(uri, self.client_for(uri).delete_object, Bucket=bucket, Key=key)

    def delete_many(self, uri: str, rels: Sequence[str]) -> None:  # not list[str]: in this class `list` is the method
        bucket, key = split_s3_uri(uri)
        keys = [f"{key}/{r}".lstrip("/") for r in rels]
        for i in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[i : i + 1000]]
            self._call(uri, self.client_for(uri).delete_objects, Bucket=bucket,
                       Delete={"Objects": batch, "Quiet": True})

    def delete_tree(self, uri: str) -> None:
        """Marked incomplete first (readers stop taking it), then the files, then the manifest."""
        self._mark_incomplete(uri)
        self.delete_many(uri, [rel for rel in self.list(uri) if rel != MANIFEST])
        self.delete(join(uri, MANIFEST))

    def _mark_incomplete(self, uri: str) -> None:
        self.put_bytes(join(uri, MANIFEST), json.dumps({"complete": False, "files": {}}).encode(), "application/json")

    # --- what a URI names, and checks -------------------------------------------------------------------

    def is_object(self, uri: str) -> ObjectInfo | None:
        """The object `uri` names, or None when it names a tree (or nothing)."""
        if not split_s3_uri(uri)[1]:
            return None
        try:
            return self.head(uri)
        except StoreError as err:
            if err.reason == StorageReason.OBJECT_NOT_FOUND:
                return None
            raise

    def check_readable(self, uri: str) -> str:
        """"object" or "tree" when `uri` names something readable, else a StoreError saying why not."""
        if self.is_object(uri) is not None:
            return "object"
        bucket, key = split_s3_uri(uri)
        found = self._call(uri, self.client_for(uri).list_objects_v2, Bucket=bucket, Prefix=f"{key}/" if key else "",
                           MaxKeys=1)
        if not found.get("KeyCount") and not found.get("Contents"):
            raise StoreError(StorageReason.OBJECT_NOT_FOUND, uri,
                             f"{uri}: no such object, and no objects under {uri.rstrip('/')}/")
        manifest = self.read_manifest(uri)
        if manifest is not None and manifest.get("complete") is False:
            raise _incomplete(uri)
        return "tree"

    def check_writable(self, uri: str) -> None:
        """Write and delete a small probe object under `uri`."""
        probe = join(uri, f".kubestill-write-check-{secrets.token_hex(4)}")
        try:
            self.put_bytes(probe, b"ok", "text/plain")
            self.delete(probe)
        except StoreError as err:  # about `uri`, not the probe's name
            if err.reason == StorageReason.ACCESS_DENIED:
                # Some servers (SeaweedFS) deny a write to a missing bucket instead of saying it is missing.
                bucket = split_s3_uri(uri)[0]
                self._call(uri, self.client_for(uri).list_objects_v2, Bucket=bucket, MaxKeys=1)
            raise StoreError(err.reason, uri, err.message.replace(probe, uri)) from None


def _incomplete(uri: str) -> StoreError:
    return StoreError(StorageReason.OBJECT_NOT_FOUND, uri,
                      f"{uri}: the tree is incomplete (still being written, or its writer died before its manifest); "
                      "run the stage that writes it again")


def join(uri: str, *parts: str) -> str:
    return "/".join([uri.rstrip("/"), *(p.strip("/") for p in parts if p.strip("/"))])
