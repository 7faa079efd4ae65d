"""Reference images of a split clip, each given to the chunk holding its time, at local times.

A keyframe or prompt image of a long Runway Aleph 2 edit is placed in the source's (or output's)
time; once the clip is cut, it belongs to one chunk, at that chunk's own clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from prefect_scenario import video as media
from prefect_scenario.validation import KeyframeSpec, PromptImageSpec


@dataclass(frozen=True)
class ChunkReferences:
    """The reference images of one chunk, at the chunk's local times (seconds)."""

    keyframes: list[KeyframeSpec]
    prompt_images: list[PromptImageSpec]


def chunk_at(spans: Sequence[media.ChunkSpan], seconds: float) -> int:
    """The index of the chunk holding ``seconds`` of the source (the last one from its end on)."""
    for span in spans:
        if span.start_seconds <= seconds < span.end_seconds:
            return span.index
    return spans[-1].index if seconds >= spans[-1].start_seconds else spans[0].index


def _local(span: media.ChunkSpan, seconds: float) -> float:
    # Millisecond precision; never past the chunk's own end (the API checks times against it).
    return round(min(max(seconds - span.start_seconds, 0.0), span.duration_seconds), 3)


def map_references(
    spans: Sequence[media.ChunkSpan],
    keyframes: Sequence[KeyframeSpec],
    prompt_images: Sequence[PromptImageSpec],
    duration_seconds: float,
) -> list[ChunkReferences]:
    """Give each reference image to the chunk holding its time, at the chunk's local time.

    A keyframe at ``seconds`` (or ``at`` x the clip's duration) of the source goes to the chunk
    containing that time, as ``seconds - chunk start``. A prompt image at an output timestamp (or
    ``position`` x duration) goes the same way, as a local timestamp: Aleph keeps the clip's timing.

    Args:
        spans: the chunks.
        keyframes: keyframes in the source's time.
        prompt_images: prompt images in the (whole) output's time.
        duration_seconds: the source clip's duration (for ``at`` and positions).

    Returns:
        One entry per chunk, in order.
    """
    mapped = [ChunkReferences(keyframes=[], prompt_images=[]) for _ in spans]
    for keyframe in keyframes:
        seconds = (
            keyframe.seconds if keyframe.seconds is not None else (keyframe.at or 0.0) * duration_seconds
        )
        span = spans[chunk_at(spans, seconds)]
        mapped[span.index].keyframes.append(KeyframeSpec(image=keyframe.image, seconds=_local(span, seconds)))
    for image in prompt_images:
        if image.timestamp_seconds is not None:
            seconds = image.timestamp_seconds
        else:
            seconds = (image.position_percentage or 0.0) * duration_seconds
        span = spans[chunk_at(spans, seconds)]
        mapped[span.index].prompt_images.append(
            PromptImageSpec(image=image.image, timestamp_seconds=_local(span, seconds))
        )
    return mapped
