"""The two models the emulator serves, in the shape of the live ``GET /models/{id}`` capture.

Aleph's inputs follow the recorded answer for ``model_runway-aleph-2`` (scenario-api.md section 7.1)
plus ``seed`` from the 2026-07 reference page. Video to Layers follows its reference page (7.2).
The SDK's Model type requires more fields than live captures carry (``createdAt``,
``collectionIds``, ...); the emulator returns that superset so a strictly validating SDK accepts it.
"""

from __future__ import annotations

import copy
from typing import Any

from prefect_scenario.models import (
    ALEPH_MAX_PROMPT_CHARS,
    ALEPH_MAX_REFERENCES,
    ALEPH_MAX_SEED,
    ALEPH_MAX_VIDEO_BYTES,
    ALEPH_MAX_VIDEO_SECONDS,
    ALEPH_MODEL_ID,
    LAYERS_DEFAULT_LAYERS,
    LAYERS_MAX_LAYERS,
    LAYERS_MIN_LAYERS,
    VIDEO_LAYERS_MODEL_ID,
    ModelInfo,
    ModelInput,
)

_ALWAYS = {"always": True}


def _image_input(description: str) -> dict[str, Any]:
    """The ``uri`` field of a keyframe or a prompt image: the same in both arrays but for its words."""
    return {
        "description": description,
        "kind": "image",
        "label": "Image",
        "name": "uri",
        "costImpact": False,
        "required": _ALWAYS,
        "type": "file",
    }


_ALEPH_INPUTS: list[dict[str, Any]] = [
    {
        "description": "Describe how you want the video to look or feel after editing — style, atmosphere, "
        "visual changes. For example: 'transform into a noir film with high contrast and "
        "rain-soaked streets'.",
        "label": "Prompt",
        "maxLength": ALEPH_MAX_PROMPT_CHARS,
        "name": "prompt",
        "costImpact": False,
        "prompt": True,
        "required": _ALWAYS,
        "type": "string",
        "promptSpark": True,
    },
    {
        "description": "The source video to edit. Maximum 30 seconds and 16 MB. The model rewrites its "
        "visuals based on your prompt while preserving the original motion and structure.",
        "kind": "video",
        "label": "Video",
        "maxSize": ALEPH_MAX_VIDEO_BYTES,
        "maxDuration": int(ALEPH_MAX_VIDEO_SECONDS),
        "name": "video",
        "costImpact": True,
        "parent": True,
        "required": _ALWAYS,
        "type": "file",
    },
    {
        "description": "Pin reference images to specific moments in the video to guide the edit at those "
        "points. Add up to 5 keyframes. Use Seconds or Position to set each one's timing.",
        "inputs": [
            _image_input("The reference image to use at this moment in the video."),
            {
                "description": "When this keyframe applies, as a number of seconds from the start of the "
                "video.",
                "group": "Timing",
                "label": "Seconds",
                "min": 0,
                "name": "seconds",
                "costImpact": False,
                "type": "number",
            },
            {
                "description": "When this keyframe applies, as a fraction of the total video length. "
                "0 = start, 1 = end, 0.5 = halfway.",
                "group": "Timing",
                "label": "Position",
                "max": 1,
                "min": 0,
                "name": "at",
                "costImpact": False,
                "step": 0.01,
                "type": "number",
            },
        ],
        "label": "Keyframes",
        "maxLength": ALEPH_MAX_REFERENCES,
        "name": "keyframes",
        "costImpact": False,
        "type": "inputs_array",
    },
    {
        "description": "Alternative to Keyframes — pin reference images to moments in the output video. "
        "Cannot be used together with Keyframes. Add up to 5 images.",
        "inputs": [
            _image_input("The reference image to apply at this position in the output."),
            {
                "allowedValues": ["timestamp", "position"],
                "description": "Whether to set the position using a timestamp in seconds or a percentage of "
                "the video's total length.",
                "default": "position",
                "label": "Position Type",
                "name": "positionType",
                "costImpact": False,
                "required": _ALWAYS,
                "type": "string",
            },
            {
                "description": "When this image applies, as a number of seconds from the start of the output "
                "video.",
                "default": 0,
                "group": "Position",
                "label": "Timestamp Seconds",
                "min": 0,
                "name": "timestampSeconds",
                "costImpact": False,
                "type": "number",
            },
            {
                "description": "When this image applies, as a fraction of the output video length. "
                "0 = start, 1 = end.",
                "default": 0,
                "group": "Position",
                "label": "Position Percentage",
                "max": 1,
                "min": 0,
                "name": "positionPercentage",
                "costImpact": False,
                "step": 0.01,
                "type": "number",
            },
        ],
        "label": "Prompt Images",
        "maxLength": ALEPH_MAX_REFERENCES,
        "name": "promptImage",
        "costImpact": False,
        "type": "inputs_array",
    },
    {
        "description": "Seed of the generation: the same inputs and seed give the same edit.",
        "label": "Seed",
        "min": 0,
        "max": ALEPH_MAX_SEED,
        "step": 1,
        "name": "seed",
        "costImpact": False,
        "type": "number",
    },
]

_LAYERS_INPUTS: list[dict[str, Any]] = [
    {
        "description": "The video to split into layers.",
        "kind": "video",
        "label": "Video",
        "name": "video",
        "costImpact": True,
        "parent": True,
        "required": _ALWAYS,
        "type": "file",
    },
    {
        "description": "How to split the video: describe the objects or the splitting rule, not the scene.",
        "label": "Separation Instruction",
        "name": "separationInstruction",
        "costImpact": False,
        "required": _ALWAYS,
        "type": "string",
    },
    {
        "description": "The most layers to extract, the background included. The model may stop sooner; "
        "more layers cost more.",
        "label": "Max Layers",
        "name": "maxLayers",
        "min": LAYERS_MIN_LAYERS,
        "max": LAYERS_MAX_LAYERS,
        "step": 1,
        "default": LAYERS_DEFAULT_LAYERS,
        "costImpact": True,
        "type": "number",
    },
]


def _model(
    model_id: str,
    name: str,
    description: str,
    source: str,
    tags: list[str],
    inputs: list[dict[str, Any]],
    date: str,
) -> dict[str, Any]:
    return {
        "id": model_id,
        "name": name,
        "shortDescription": description,
        "type": "custom",
        "privacy": "public",
        "capabilities": ["video2video"],
        "status": "trained",
        "tags": tags,
        "inputs": inputs,
        "parameters": {},
        # Required by the SDK's Model type, absent from live captures of public models.
        "source": source,
        "custom": False,
        "collectionIds": [],
        "exampleAssetIds": [],
        "trainingImagesNumber": 0,
        "createdAt": date,
        "updatedAt": date,
    }


_MODELS: dict[str, dict[str, Any]] = {
    ALEPH_MODEL_ID: _model(
        ALEPH_MODEL_ID,
        "Runway Aleph 2",
        "Runway Aleph 2 by Runway ML edits real footage with text prompts. Remove objects, swap products, "
        "restyle or relight shots. Motion and audio preserved. Up to 30s at 1080p.",
        "other",
        ["Aleph", "Editing", "Runway", "Video to Video", "sc:featured", "sc:third-party"],
        _ALEPH_INPUTS,
        "2026-07-29T00:00:00.000Z",
    ),
    VIDEO_LAYERS_MODEL_ID: _model(
        VIDEO_LAYERS_MODEL_ID,
        "Video to Layers",
        "Splits a video into separate, editable layers — the moving foreground objects plus the background — "
        "each saved with transparency.",
        "scenario",
        ["Layers", "Segmentation", "Video to Video"],
        _LAYERS_INPUTS,
        "2026-07-01T00:00:00.000Z",
    ),
}

# Parsed once with the package's own model: the descriptors above must always be readable by it.
_PARSED: dict[str, ModelInfo] = {key: ModelInfo.model_validate(value) for key, value in _MODELS.items()}


def model_ids() -> list[str]:
    """The ids of the models the emulator serves."""
    return list(_MODELS)


def model_wire(model_id: str) -> dict[str, Any] | None:
    """The ``model`` object of ``GET /models/{model_id}`` (a copy), or None for an unknown id."""
    descriptor = _MODELS.get(model_id)
    return copy.deepcopy(descriptor) if descriptor is not None else None


def model_inputs(model_id: str) -> list[ModelInput] | None:
    """The parsed input descriptors of ``model_id``, or None for an unknown id."""
    parsed = _PARSED.get(model_id)
    return list(parsed.inputs) if parsed is not None else None
