"""The object-storage reference shared by DistillationJob and StudentModel."""

from __future__ import annotations

from pydantic import Field

from ._base import KubeModel, ResourceName


class StorageSecretRef(KubeModel):
    """A Secret in the same namespace with the S3 credentials and connection settings of the resource's s3:// URIs.

    Data keys (KServe's names; each optional one reaches the Pods only when present): AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_ENDPOINT_URL or S3_ENDPOINT + S3_USE_HTTPS,
    AWS_DEFAULT_REGION, S3_VERIFY_SSL, S3_USER_VIRTUAL_BUCKET, awsAnonymousCredential, AWS_CA_BUNDLE.
    They reach the Pods as environment variables by secretKeyRef; the operator never reads the Secret.
    """

    name: ResourceName = Field(description="Name of the Secret.")
