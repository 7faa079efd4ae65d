"""Every URL the app serves: ``/v1``, the file server's paths, and where the control plane sits.

Shared by the routes, the fault middleware (which leaves the control plane alone) and the docs.
"""

from __future__ import annotations

API_PREFIX = "/v1"
CONTROL_PREFIX = "/_emulator"

GENERATE_ROUTE = f"POST {API_PREFIX}/generate/custom/{{modelId}}"
FILE_PATH = "/files/{assetId}"
PART_PATH = "/parts/{uploadId}/{partNumber}"


def file_path(asset_id: str) -> str:
    """The path of an asset's file on the emulator's file server."""
    return f"/files/{asset_id}"


def part_path(upload_id: str, number: int) -> str:
    """The path of an upload part's presigned PUT."""
    return f"/parts/{upload_id}/{number}"
