"""moto's S3 server as the tests reach it: dummy keys, one region."""

from __future__ import annotations

from typing import Any

ACCESS_KEY = "testing"
SECRET_KEY = "moto-secret-canary-0c1f"  # distinct from the key id: a test can look for it
REGION = "us-east-1"


def s3_client(endpoint_url: str) -> Any:
    """A boto3 S3 client for moto's server at ``endpoint_url``."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name=REGION,
    )
