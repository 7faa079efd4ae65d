"""Local checks of a generation request, run before any upload or spend.

A generation costs money and minutes; a bad input must fail here in about a second, with a
message that names the limit and says what to change. The limits come from ``models.py`` (the
same constants the emulator enforces), the media facts from a local PyAV probe.

A video or image given as an asset id (``asset_…``) cannot be probed locally: the API checks it
at submit time (a 400 before any job is created, so still nothing is spent).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from prefect_scenario import video as media
from prefect_scenario.errors import InputValidationError, MediaError
from prefect_scenario.models import (
    ALEPH_MAX_PROMPT_CHARS,
    ALEPH_MAX_REFERENCES,
    ALEPH_MAX_SEED,
    ALEPH_MAX_VIDEO_BYTES,
    ALEPH_MAX_VIDEO_SECONDS,
    LAYERS_MAX_LAYERS,
    LAYERS_MIN_LAYERS,
    is_asset_id,
)

_MIB = 1024 * 1024
# Runway Aleph 2's hosts take at most 30 fps (a provider hint, not a documented limit): fitting a
# clip caps its frame rate here, and only a clip that is fitted anyway is slowed down.
ALEPH_FIT_MAX_FPS = 30.0

ClipHandling = Literal["as_is", "fit", "split"]
"""What happens to an Aleph clip before upload: sent as it is, re-encoded to fit, or split in chunks."""
# An instruction must name something: at least one word of two letters or more.
_WORD = re.compile(r"[^\W\d_]{2,}")
# A prompt must hold at least one letter (one character is a word in some scripts).
_LETTER = re.compile(r"[^\W\d_]")


def _plain_optional_fields(schema: dict[str, Any]) -> None:
    """Each optional number a plain field of the Run form: no ``null`` type switch, no null pre-fill.

    Prefect's form opens ``anyOf [number, null]`` on a switch, and pre-fills a ``"default": null``
    that its own validation then refuses; a plain ``number`` that is not required renders as an
    empty field that may stay empty (see ``flows/_flow.py`` for the flow parameters).
    """
    for field in schema.get("properties", {}).values():
        if "default" in field and field["default"] is None:
            del field["default"]
        members = field.get("anyOf", [])
        kept = [member for member in members if member != {"type": "null"}]
        if len(members) == 2 and len(kept) == 1:
            del field["anyOf"]
            field.update(kept[0])


class KeyframeSpec(BaseModel):
    """A reference image pinned to a time of the input clip: ``seconds`` or ``at`` (0..1).

    ``image`` is a local path (uploaded for you) or an existing asset id.
    """

    model_config = ConfigDict(extra="forbid", json_schema_extra=_plain_optional_fields)

    image: str = Field(min_length=1, description="Local path or asset id of the reference image.")
    seconds: float | None = Field(default=None, description="Time in the input clip, in seconds.")
    at: float | None = Field(default=None, description="Position in the input clip, 0 to 1.")

    @model_validator(mode="after")
    def _one_position(self) -> KeyframeSpec:
        if (self.seconds is None) == (self.at is None):
            raise ValueError(
                f"keyframe {self.image!r} needs exactly one of 'seconds' or 'at' (a fraction 0..1)"
            )
        return self

    @classmethod
    def parse(cls, text: str) -> KeyframeSpec:
        """Parse the CLI form ``PATH@SECONDS`` or ``PATH@PERCENT%``.

        Raises:
            InputValidationError: when the text has no ``@`` time or the time is not a number.
        """
        image, time = _split_at(text, "--keyframe")
        if time.endswith("%"):
            return cls(image=image, at=_number(time[:-1], text, "--keyframe") / 100.0)
        return cls(image=image, seconds=_number(time, text, "--keyframe"))


class PromptImageSpec(BaseModel):
    """A reference image placed in the *output* clip, by timestamp or by position (0..1)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_plain_optional_fields)

    image: str = Field(min_length=1, description="Local path or asset id of the reference image.")
    timestamp_seconds: float | None = Field(default=None, description="Time in the output clip, seconds.")
    position_percentage: float | None = Field(default=None, description="Position in the output, 0 to 1.")

    @classmethod
    def parse(cls, text: str) -> PromptImageSpec:
        """Parse the CLI form ``PATH@SECONDS`` or ``PATH@PERCENT%``."""
        image, time = _split_at(text, "--prompt-image")
        if time.endswith("%"):
            return cls(image=image, position_percentage=_number(time[:-1], text, "--prompt-image") / 100.0)
        return cls(image=image, timestamp_seconds=_number(time, text, "--prompt-image"))


def _split_at(text: str, option: str) -> tuple[str, str]:
    image, sep, time = text.rpartition("@")
    if not sep or not image or not time:
        raise InputValidationError(
            f"{option} {text!r} has no time: write PATH@SECONDS (e.g. ref.png@2.5) or PATH@PERCENT% "
            "(e.g. ref.png@50%)",
            field=option,
        )
    return image, time


def _number(value: str, text: str, option: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise InputValidationError(
            f"{option} {text!r}: {value!r} is not a number of seconds; write e.g. ref.png@2.5",
            field=option,
        ) from None


def probe_local_video(video: Path) -> media.VideoProbe:
    """Probe a local clip, turning every media failure into a clear ``MediaError``.

    Raises:
        MediaError: the file is missing, not a video, undecodable or has no frames.
    """
    if not video.exists():
        raise MediaError(f"video {video} does not exist: check the path", field="video")
    if not video.is_file():
        raise MediaError(f"video {video} is not a file: give the path of a video file", field="video")
    try:
        probe = media.probe_video(video)
    except media.MediaError as exc:
        raise MediaError(_undecodable_message(video, exc), field="video") from None
    if probe.nb_frames <= 0 or probe.duration_seconds <= 0:
        raise MediaError(
            f"video {video} has no frames: export the clip again (H.264 MP4 or VP9 WebM)", field="video"
        )
    return probe


# The first bytes of the containers a video comes in: what is left of a file FFmpeg cannot read
# tells a damaged video apart from a file that never was one.
_CONTAINER_MAGIC = {
    b"ftyp": "an MP4/MOV",  # ISO base media: bytes 4..8
    b"\x1a\x45\xdf\xa3": "a WebM/Matroska",  # EBML, at byte 0
    b"RIFF": "an AVI",
}


def _sniff(video: Path) -> str | None:
    """What the start of the file says it is: a container's name, ``text``, or None (unknown)."""
    try:
        with open(video, "rb") as handle:
            head = handle.read(512)
    except OSError:
        return None
    if head[4:8] == b"ftyp":
        return _CONTAINER_MAGIC[b"ftyp"]
    for magic, name in _CONTAINER_MAGIC.items():
        if head.startswith(magic):
            return name
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return "text" if text and all(ch.isprintable() or ch in "\r\n\t" for ch in text) else None


def _undecodable_message(video: Path, exc: Exception) -> str:
    """The probe's failure, said in terms of what the file looks like and what to do about it."""
    kind = _sniff(video)
    if kind == "text":
        return (
            f"video {video} is a text file, not a video (its name ends in {video.suffix or 'nothing'}, its "
            "content is text): pick the video file itself, an MP4 (H.264) or WebM (VP9)"
        )
    if kind is not None:
        return (
            f"video {video} starts like {kind} file but FFmpeg cannot decode it: it is truncated or "
            "damaged (an unfinished download or copy?); copy or export it again"
        )
    return str(exc)


def _check_image(image: str, what: str) -> None:
    if is_asset_id(image):
        return
    path = Path(image)
    if not path.is_file():
        raise MediaError(f"{what} {image!r} does not exist: give a PNG/JPEG path or an asset id", field=what)
    try:
        media.probe_image(path)
    except media.MediaError as exc:
        raise MediaError(
            f"{what} {image!r} is not a decodable image ({exc}); use a PNG or JPEG", field=what
        ) from None


def validate_layers_inputs(
    video: Path | None, separation_instruction: str, max_layers: int
) -> media.VideoProbe | None:
    """Check a "Video to Layers" request locally.

    Args:
        video: the local clip, or None when the clip is an existing asset.
        separation_instruction: how to split the clip.
        max_layers: at most this many layers (1..10; the background counts as one).

    Returns:
        The probe of the local clip, or None for an asset id.

    Raises:
        InputValidationError: what is wrong and what to change.
    """
    if isinstance(max_layers, bool) or not isinstance(max_layers, int):
        raise InputValidationError(
            f"max_layers must be a whole number from {LAYERS_MIN_LAYERS} to {LAYERS_MAX_LAYERS}, "
            f"got {max_layers!r}",
            field="max_layers",
        )
    if not LAYERS_MIN_LAYERS <= max_layers <= LAYERS_MAX_LAYERS:
        raise InputValidationError(
            f"max_layers is {max_layers}; Video to Layers takes {LAYERS_MIN_LAYERS} to {LAYERS_MAX_LAYERS} "
            f"(the background counts as one layer): pick a value in that range",
            field="max_layers",
        )
    if not separation_instruction.strip():
        raise InputValidationError(
            "separation_instruction is empty: say how to split the clip, e.g. "
            "'separate each moving object from the background'",
            field="separation_instruction",
        )
    if not _WORD.search(separation_instruction):
        raise InputValidationError(
            f"separation_instruction {separation_instruction!r} describes nothing: name what to separate, "
            "e.g. 'the dancers apart from the stage'",
            field="separation_instruction",
        )
    return probe_local_video(video) if video is not None else None


def check_aleph_clip_limits(probe: media.VideoProbe) -> None:
    """Refuse a clip over Runway Aleph 2's limits (30 s, 16 MiB), saying how to get under them."""
    if probe.duration_seconds > ALEPH_MAX_VIDEO_SECONDS + 1e-6:
        raise MediaError(
            f"video {probe.path.name} lasts {probe.duration_seconds:.2f} s; Runway Aleph 2 takes at most "
            f"{ALEPH_MAX_VIDEO_SECONDS:.0f} s: trim it, or allow splitting (allow_split=True) so it is "
            "edited in chunks",
            field="video",
        )
    if probe.size_bytes > ALEPH_MAX_VIDEO_BYTES:
        raise MediaError(
            f"video {probe.path.name} is {probe.size_bytes / _MIB:.1f} MiB; Runway Aleph 2 takes at most "
            f"{ALEPH_MAX_VIDEO_BYTES / _MIB:.0f} MiB: re-encode it at a lower bitrate, or allow fitting "
            "(fit_to_limits=True) so it is re-encoded for you",
            field="video",
        )


def plan_aleph_clip(probe: media.VideoProbe, *, allow_split: bool, fit_to_limits: bool) -> ClipHandling:
    """Decide how a local clip meets Runway Aleph 2's limits (30 s, 16 MiB), or refuse it.

    Over 30 s, only splitting helps. Over 16 MiB only, fitting (one re-encoded clip, one job) is
    preferred to splitting (several jobs and seams). A clip within the limits is sent as it is,
    unless fitting was asked for and its frame rate is over 30 fps.

    Args:
        probe: the local clip's probe.
        allow_split: the clip may be edited in chunks and stitched back.
        fit_to_limits: the clip may be re-encoded (H.264, at most 16 MiB and 30 fps).

    Returns:
        ``as_is``, ``fit`` or ``split``.

    Raises:
        MediaError: over a limit that neither option allowed can meet, with the options that would.
    """
    over_seconds = probe.duration_seconds > ALEPH_MAX_VIDEO_SECONDS + 1e-6
    over_bytes = probe.size_bytes > ALEPH_MAX_VIDEO_BYTES
    if over_seconds:
        if allow_split:
            return "split"
        raise MediaError(
            f"video {probe.path.name} lasts {probe.duration_seconds:.2f} s; Runway Aleph 2 takes at most "
            f"{ALEPH_MAX_VIDEO_SECONDS:.0f} s: trim it, or allow splitting so it is edited in chunks and "
            "stitched back (allow_split=True; on the command line, leave out --no-split)",
            field="video",
        )
    if over_bytes:
        if fit_to_limits:
            return "fit"
        if allow_split:
            return "split"
        raise MediaError(
            f"video {probe.path.name} is {probe.size_bytes / _MIB:.1f} MiB; Runway Aleph 2 takes at most "
            f"{ALEPH_MAX_VIDEO_BYTES / _MIB:.0f} MiB: re-encode it at a lower bitrate, or allow fitting so "
            "it is re-encoded for you (fit_to_limits=True; --fit on the command line)",
            field="video",
        )
    if fit_to_limits and probe.frame_rate > ALEPH_FIT_MAX_FPS + 1e-6:
        return "fit"
    return "as_is"


def validate_aleph_inputs(
    video: Path | None,
    prompt: str,
    keyframes: Sequence[KeyframeSpec] | None = None,
    prompt_images: Sequence[PromptImageSpec] | None = None,
    seed: int | None = None,
    *,
    enforce_clip_limits: bool = True,
) -> media.VideoProbe | None:
    """Check a "Runway Aleph 2" request locally.

    Args:
        video: the local clip, or None when the clip is an existing asset.
        prompt: the edit to make (1..1000 characters).
        keyframes: reference images pinned to times of the input clip (at most 5).
        prompt_images: reference images placed in the output (at most 5; never with keyframes).
        seed: 0..4294967295, or None for a random result.
        enforce_clip_limits: False when the caller splits or re-encodes a clip over the limits.

    Returns:
        The probe of the local clip, or None for an asset id.

    Raises:
        InputValidationError: what is wrong and what to change.
    """
    keyframes = list(keyframes or ())
    prompt_images = list(prompt_images or ())
    if not prompt.strip():
        raise InputValidationError(
            "prompt is empty: describe the edit, e.g. 'turn it into a watercolour painting'", field="prompt"
        )
    if not _LETTER.search(prompt):
        raise InputValidationError(
            f"prompt {prompt!r} describes nothing: say what to change, e.g. 'make it a snowy night'",
            field="prompt",
        )
    if len(prompt) > ALEPH_MAX_PROMPT_CHARS:
        raise InputValidationError(
            f"prompt is {len(prompt)} characters; Runway Aleph 2 takes at most {ALEPH_MAX_PROMPT_CHARS}: "
            f"shorten it by {len(prompt) - ALEPH_MAX_PROMPT_CHARS}",
            field="prompt",
        )
    if seed is not None and (isinstance(seed, bool) or not 0 <= seed <= ALEPH_MAX_SEED):
        raise InputValidationError(
            f"seed {seed!r} is out of range: use a whole number from 0 to {ALEPH_MAX_SEED}", field="seed"
        )
    if keyframes and prompt_images:
        raise InputValidationError(
            "keyframes and prompt images cannot be used together in one Aleph edit: keep one kind",
            field="keyframes",
        )
    for what, items in (("keyframes", keyframes), ("prompt images", prompt_images)):
        if len(items) > ALEPH_MAX_REFERENCES:
            raise InputValidationError(
                f"{len(items)} {what} given; Runway Aleph 2 takes at most {ALEPH_MAX_REFERENCES}: "
                f"drop {len(items) - ALEPH_MAX_REFERENCES}",
                field=what.replace(" ", "_"),
            )
    probe = probe_local_video(video) if video is not None else None
    if probe is not None and enforce_clip_limits:
        check_aleph_clip_limits(probe)
    for keyframe in keyframes:
        _check_keyframe_time(keyframe, probe)
        _check_image(keyframe.image, "keyframe")
    for prompt_image in prompt_images:
        _check_prompt_image(prompt_image)
        _check_image(prompt_image.image, "prompt image")
    return probe


def _check_keyframe_time(keyframe: KeyframeSpec, probe: media.VideoProbe | None) -> None:
    if keyframe.at is not None and not 0.0 <= keyframe.at <= 1.0:
        raise InputValidationError(
            f"keyframe {keyframe.image!r} at {keyframe.at:g} is outside the clip: 'at' is a fraction "
            "from 0 (start) to 1 (end)",
            field="keyframes",
        )
    if keyframe.seconds is None:
        return
    if keyframe.seconds < 0:
        raise InputValidationError(
            f"keyframe {keyframe.image!r} at {keyframe.seconds:g} s is negative: use a time from 0",
            field="keyframes",
        )
    if probe is not None and keyframe.seconds > probe.duration_seconds:
        raise InputValidationError(
            f"keyframe {keyframe.image!r} at {keyframe.seconds:g} s is after the end of the "
            f"{probe.duration_seconds:.2f} s clip: use a time from 0 to {probe.duration_seconds:.2f}",
            field="keyframes",
        )


def _check_prompt_image(spec: PromptImageSpec) -> None:
    if spec.timestamp_seconds is not None and spec.position_percentage is not None:
        raise InputValidationError(
            f"prompt image {spec.image!r} has both a timestamp and a position: give one",
            field="prompt_images",
        )
    if spec.timestamp_seconds is not None and spec.timestamp_seconds < 0:
        raise InputValidationError(
            f"prompt image {spec.image!r} at {spec.timestamp_seconds:g} s is negative: use a time from 0",
            field="prompt_images",
        )
    if spec.position_percentage is not None and not 0.0 <= spec.position_percentage <= 1.0:
        raise InputValidationError(
            f"prompt image {spec.image!r} position {spec.position_percentage:g} is outside 0..1",
            field="prompt_images",
        )
