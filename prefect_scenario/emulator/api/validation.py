"""Validation of a generation body against the model's input descriptors.

Generic rules come from the descriptors of :mod:`~prefect_scenario.emulator.service.catalog`
(required, types, min/max, integer steps, lengths, allowed values, item counts, referenced assets
of the right kind within ``maxSize`` and ``maxDuration``); the rules descriptors cannot say are
model-specific (keyframes XOR promptImage, one timing per keyframe, times inside the clip). Every
refusal names the field, in the reason and in ``details.field``, using paths such as
``keyframes[1].seconds``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from prefect_scenario.emulator.api.errors import ApiError, bad_request
from prefect_scenario.emulator.service.records import CheckedBody
from prefect_scenario.models import ALEPH_MODEL_ID, ModelInput


@dataclass(frozen=True)
class AssetFacts:
    """What validation needs to know about a referenced asset."""

    kind: str
    status: str
    size: int
    duration: float | None


AssetLookup = Callable[[str], AssetFacts | None]


def validate_body(model_id: str, body: Any, inputs: list[ModelInput], lookup: AssetLookup) -> CheckedBody:
    """Check ``body`` against ``inputs``.

    Raises:
        ApiError: 400 saying what is wrong and which field.
    """
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object of the model's inputs")
    _check_object(body, inputs, lookup, prefix="", owner=f"model {model_id}")
    video_id = body.get("video")
    facts = lookup(video_id) if isinstance(video_id, str) else None
    if facts is None or not isinstance(video_id, str):  # pragma: no cover - the descriptors require it
        raise bad_request('Input "video" is required', field="video")
    seconds = facts.duration or 0.0
    if model_id == ALEPH_MODEL_ID:
        _check_aleph(body, seconds)
    return CheckedBody(model_id=model_id, body=body, video_asset_id=video_id, video_seconds=seconds)


def _check_object(
    values: Mapping[str, Any], inputs: list[ModelInput], lookup: AssetLookup, *, prefix: str, owner: str
) -> None:
    known = {item.name for item in inputs}
    for key in values:
        if key not in known:
            field = f"{prefix}{key}"
            raise bad_request(
                f'Unknown input "{field}" for {owner}; expected one of: {", ".join(sorted(known))}',
                field=field,
            )
    for descriptor in inputs:
        field = f"{prefix}{descriptor.name}"
        value = values.get(descriptor.name)
        if value is None:
            # A required input with a default is filled in, as the web app does.
            if descriptor.is_required and descriptor.default is None:
                raise bad_request(f'Input "{field}" is required', field=field)
            continue
        _check_value(field, value, descriptor, lookup)


def _check_value(field: str, value: Any, descriptor: ModelInput, lookup: AssetLookup) -> None:
    kind = descriptor.type
    if kind == "string":
        _check_string(field, value, descriptor)
    elif kind == "number":
        _check_number(field, value, descriptor)
    elif kind == "file":
        _check_file(field, value, descriptor, lookup)
    elif kind == "inputs_array":
        _check_items(field, value, descriptor, lookup)
    elif kind == "boolean" and not isinstance(value, bool):
        raise bad_request(f'Input "{field}" must be a boolean', field=field)


def _check_string(field: str, value: Any, descriptor: ModelInput) -> None:
    if not isinstance(value, str):
        raise bad_request(f'Input "{field}" must be a string', field=field)
    if descriptor.is_required and not value.strip():
        raise bad_request(f'Input "{field}" must not be empty', field=field)
    if descriptor.max_length is not None and len(value) > descriptor.max_length:
        raise bad_request(
            f'Input "{field}" is {len(value)} characters long; the maximum is {descriptor.max_length}',
            field=field,
        )
    if descriptor.min_length is not None and len(value) < descriptor.min_length:
        raise bad_request(
            f'Input "{field}" is {len(value)} characters long; the minimum is {descriptor.min_length}',
            field=field,
        )
    if descriptor.allowed_values is not None and value not in descriptor.allowed_values:
        allowed = ", ".join(str(item) for item in descriptor.allowed_values)
        raise bad_request(f'Input "{field}" must be one of: {allowed}; got "{value}"', field=field)


def _check_number(field: str, value: Any, descriptor: ModelInput) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise bad_request(f'Input "{field}" must be a number', field=field)
    # An integer step (maxLayers, seed) means the input only takes whole numbers.
    step = descriptor.step
    if step is not None and step >= 1 and float(step).is_integer() and not float(value).is_integer():
        raise bad_request(f'Input "{field}" must be an integer; got {value}', field=field)
    low, high = descriptor.min, descriptor.max
    if (low is not None and value < low) or (high is not None and value > high):
        if low is not None and high is not None:
            bounds = f"between {_num(low)} and {_num(high)}"
        elif low is not None:
            bounds = f"at least {_num(low)}"
        else:
            bounds = f"at most {_num(high or 0)}"
        raise bad_request(f'Input "{field}" must be {bounds}; got {_num(value)}', field=field)


def _check_file(field: str, value: Any, descriptor: ModelInput, lookup: AssetLookup) -> None:
    if not isinstance(value, str) or not value:
        raise bad_request(f'Input "{field}" must be an asset id (asset_...)', field=field)
    facts = lookup(value)
    if facts is None:
        raise bad_request(f'Input "{field}" references {value}, which does not exist', field=field)
    wanted = descriptor.kind or "image"
    if facts.kind != wanted:
        raise bad_request(
            f'Input "{field}" must be an asset of kind {wanted}; {value} is of kind {facts.kind}', field=field
        )
    if facts.status != "success":
        raise bad_request(f'Input "{field}": asset {value} is not ready (status {facts.status})', field=field)
    if descriptor.max_size is not None and facts.size > descriptor.max_size:
        raise bad_request(
            f'Input "{field}": {value} is {facts.size} bytes; the maximum is {descriptor.max_size} bytes '
            f"({descriptor.max_size / 1024 / 1024:g} MiB)",
            field=field,
        )
    if descriptor.max_duration is not None and (facts.duration or 0.0) > descriptor.max_duration:
        raise bad_request(
            f'Input "{field}": {value} lasts {facts.duration:.2f} s; '
            f"the maximum is {_num(descriptor.max_duration)} s",
            field=field,
        )
    if descriptor.min_duration is not None and (facts.duration or 0.0) < descriptor.min_duration:
        raise bad_request(
            f'Input "{field}": {value} lasts {facts.duration or 0.0:.2f} s; the minimum is '
            f"{_num(descriptor.min_duration)} s",
            field=field,
        )


def _check_items(field: str, value: Any, descriptor: ModelInput, lookup: AssetLookup) -> None:
    if not isinstance(value, list):
        raise bad_request(f'Input "{field}" must be an array of objects', field=field)
    if descriptor.max_length is not None and len(value) > descriptor.max_length:
        raise bad_request(
            f'Input "{field}" has {len(value)} items; at most {descriptor.max_length} are allowed',
            field=field,
        )
    for index, item in enumerate(value):
        item_field = f"{field}[{index}]"
        if not isinstance(item, dict):
            raise bad_request(f'Input "{item_field}" must be an object', field=item_field)
        _check_object(
            item, descriptor.inputs or [], lookup, prefix=f"{item_field}.", owner=f'"{field}" items'
        )


def _check_aleph(body: Mapping[str, Any], seconds: float) -> None:
    keyframes = body.get("keyframes") or []
    prompt_images = body.get("promptImage") or []
    if keyframes and prompt_images:
        raise bad_request(
            'Inputs "keyframes" and "promptImage" cannot be used together: keep one of them',
            field="promptImage",
        )
    for index, keyframe in enumerate(keyframes):
        field = f"keyframes[{index}]"
        has_seconds, has_at = keyframe.get("seconds") is not None, keyframe.get("at") is not None
        if has_seconds == has_at:
            raise bad_request(
                f'Input "{field}" needs exactly one of "seconds" or "at" (a fraction 0..1 of the clip)',
                field=field,
            )
        if has_seconds and keyframe["seconds"] > seconds:
            raise _beyond(f"{field}.seconds", keyframe["seconds"], seconds)
    for index, image in enumerate(prompt_images):
        stamp = image.get("timestampSeconds")
        if image.get("positionType", "position") == "timestamp" and stamp is not None and stamp > seconds:
            raise _beyond(f"promptImage[{index}].timestampSeconds", stamp, seconds)


def _beyond(field: str, value: float, seconds: float) -> ApiError:
    return bad_request(
        f'Input "{field}" is {_num(value)} s, after the end of the video ({seconds:.2f} s long)', field=field
    )


def _num(value: float) -> str:
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.6g}"
