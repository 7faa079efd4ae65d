"""Facts about stored files, measured with :mod:`prefect_scenario.video` (never taken on trust).

The API fills ``asset.mimeType`` and ``asset.properties`` from the real file; so does the
emulator, which is how a client's size and duration checks get exercised for real.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect_scenario import video


@dataclass(frozen=True)
class FileFacts:
    """The MIME type and ``asset.properties`` of a stored file."""

    mime_type: str
    properties: dict[str, Any]


def describe_video(path: Path) -> FileFacts:
    """Probe a video file.

    Raises:
        ValueError: the file is not a decodable video (``video.MediaError`` is a ValueError).
    """
    probe = video.probe_video(path)
    properties: dict[str, Any] = {
        "size": probe.size_bytes,
        "width": probe.width,
        "height": probe.height,
        "duration": round(probe.duration_seconds, 3),
        "frameRate": round(probe.frame_rate, 3),
        "nbFrames": probe.nb_frames,
        "codecName": probe.video_codec,
        "format": probe.container,
    }
    if probe.duration_seconds > 0:
        properties["bitrate"] = round(probe.size_bytes * 8 / probe.duration_seconds)
    return FileFacts(mime_type=video.mime_type_for(path), properties=properties)


def describe_image(path: Path) -> FileFacts:
    """Probe an image file.

    Raises:
        ValueError: the file is not a decodable PNG, JPEG or WebP image.
    """
    probe = video.probe_image(path)
    properties: dict[str, Any] = {
        "size": probe.size_bytes,
        "width": probe.width,
        "height": probe.height,
        "format": probe.format,
    }
    return FileFacts(mime_type=probe.mime_type, properties=properties)
