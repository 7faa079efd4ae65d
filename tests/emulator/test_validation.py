"""Every bad generation body answers 400 with a reason naming the field, and creates no job.

The same body is sent as a real run and as a dry run: the emulator validates before pricing, so a
dry run of a bad body is refused too (the real API is reported to price without validating).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from prefect_scenario.emulator import EmulatorState
from prefect_scenario.emulator.service.media import describe_image, describe_video
from prefect_scenario.emulator.service.records import AssetRecord
from prefect_scenario.models import ALEPH_MODEL_ID, VIDEO_LAYERS_MODEL_ID
from support.wire import stats, submit


@dataclass(frozen=True)
class Ids:
    video: str = "asset_Vide0Vide0Vide0Vide0Vide0V"
    image: str = "asset_1mage1mage1mage1mage1mag"
    long_video: str = "asset_L0ngL0ngL0ngL0ngL0ngL0ng"
    big_video: str = "asset_B1gB1gB1gB1gB1gB1gB1gB1gB"


IDS = Ids()


@pytest.fixture
def assets(emulator_state: EmulatorState, sample_clip: Path, sample_image: Path) -> Ids:
    """Assets put straight into the state: the sample clip and image, and two clips over Aleph's limits."""
    clip, image = describe_video(sample_clip), describe_image(sample_image)

    def add(asset_id: str, path: Path, kind: str, mime: str, properties: dict[str, Any]) -> None:
        emulator_state.add_asset(
            AssetRecord(
                id=asset_id,
                path=path,
                mime_type=mime,
                kind=kind,
                source="uploaded",
                properties=properties,
                created_at=0,
            )
        )

    add(IDS.video, sample_clip, "video", clip.mime_type, clip.properties)
    add(IDS.image, sample_image, "image", image.mime_type, image.properties)
    add(IDS.long_video, sample_clip, "video", clip.mime_type, {**clip.properties, "duration": 31.0})
    add(
        IDS.big_video, sample_clip, "video", clip.mime_type, {**clip.properties, "size": 16 * 1024 * 1024 + 1}
    )
    return IDS


def aleph(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"prompt": "make it noir", "video": IDS.video}
    body.update(changes)
    return {key: value for key, value in body.items() if value is not None}


def layers(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "video": IDS.video,
        "separationInstruction": "each moving shape apart",
        "maxLayers": 3,
    }
    body.update(changes)
    return {key: value for key, value in body.items() if value is not None}


def keyframe(**fields: Any) -> dict[str, Any]:
    return {"uri": IDS.image, **fields}


def prompt_image(**fields: Any) -> dict[str, Any]:
    return {"uri": IDS.image, "positionType": "position", "positionPercentage": 0.5, **fields}


CASES: list[tuple[str, str, Callable[[], Any], str, str]] = [
    # (case id, model, body, field, words in the reason)
    ("prompt-missing", ALEPH_MODEL_ID, lambda: aleph(prompt=None), "prompt", "required"),
    ("prompt-empty", ALEPH_MODEL_ID, lambda: aleph(prompt="  "), "prompt", "empty"),
    ("prompt-too-long", ALEPH_MODEL_ID, lambda: aleph(prompt="x" * 1001), "prompt", "1001 characters"),
    ("prompt-not-text", ALEPH_MODEL_ID, lambda: aleph(prompt=12), "prompt", "string"),
    ("unknown-field", ALEPH_MODEL_ID, lambda: aleph(strength=0.5), "strength", "Unknown input"),
    ("video-missing", ALEPH_MODEL_ID, lambda: aleph(video=None), "video", "required"),
    ("video-unknown-asset", ALEPH_MODEL_ID, lambda: aleph(video="asset_nope"), "video", "does not exist"),
    ("video-is-an-image", ALEPH_MODEL_ID, lambda: aleph(video=IDS.image), "video", "kind video"),
    ("video-over-30s", ALEPH_MODEL_ID, lambda: aleph(video=IDS.long_video), "video", "maximum is 30 s"),
    ("video-over-16MiB", ALEPH_MODEL_ID, lambda: aleph(video=IDS.big_video), "video", "16 MiB"),
    (
        "six-keyframes",
        ALEPH_MODEL_ID,
        lambda: aleph(keyframes=[keyframe(at=0.1 * i) for i in range(6)]),
        "keyframes",
        "at most 5",
    ),
    (
        "six-prompt-images",
        ALEPH_MODEL_ID,
        lambda: aleph(promptImage=[prompt_image()] * 6),
        "promptImage",
        "at most 5",
    ),
    (
        "keyframes-and-prompt-images",
        ALEPH_MODEL_ID,
        lambda: aleph(keyframes=[keyframe(at=0.5)], promptImage=[prompt_image()]),
        "promptImage",
        "cannot be used together",
    ),
    (
        "keyframe-no-time",
        ALEPH_MODEL_ID,
        lambda: aleph(keyframes=[keyframe()]),
        "keyframes[0]",
        "exactly one",
    ),
    (
        "keyframe-two-times",
        ALEPH_MODEL_ID,
        lambda: aleph(keyframes=[keyframe(at=0.5, seconds=1)]),
        "keyframes[0]",
        "exactly one",
    ),
    (
        "keyframe-after-end",
        ALEPH_MODEL_ID,
        lambda: aleph(keyframes=[keyframe(seconds=5.5)]),
        "keyframes[0].seconds",
        "after the end",
    ),
    (
        "keyframe-at-over-1",
        ALEPH_MODEL_ID,
        lambda: aleph(keyframes=[keyframe(at=1.5)]),
        "keyframes[0].at",
        "between 0 and 1",
    ),
    (
        "keyframe-uri-missing",
        ALEPH_MODEL_ID,
        lambda: aleph(keyframes=[{"at": 0.5}]),
        "keyframes[0].uri",
        "required",
    ),
    (
        "keyframe-uri-is-video",
        ALEPH_MODEL_ID,
        lambda: aleph(keyframes=[{"uri": IDS.video, "at": 0.5}]),
        "keyframes[0].uri",
        "kind image",
    ),
    (
        "keyframe-unknown-field",
        ALEPH_MODEL_ID,
        lambda: aleph(keyframes=[keyframe(at=0.5, weight=1)]),
        "keyframes[0].weight",
        "Unknown",
    ),
    ("keyframes-not-a-list", ALEPH_MODEL_ID, lambda: aleph(keyframes=keyframe(at=0.5)), "keyframes", "array"),
    (
        "prompt-image-bad-position-type",
        ALEPH_MODEL_ID,
        lambda: aleph(promptImage=[prompt_image(positionType="middle")]),
        "promptImage[0].positionType",
        "one of",
    ),
    (
        "prompt-image-after-end",
        ALEPH_MODEL_ID,
        lambda: aleph(promptImage=[prompt_image(positionType="timestamp", timestampSeconds=9)]),
        "promptImage[0].timestampSeconds",
        "after the end",
    ),
    ("seed-negative", ALEPH_MODEL_ID, lambda: aleph(seed=-1), "seed", "between 0 and 4294967295"),
    ("seed-too-big", ALEPH_MODEL_ID, lambda: aleph(seed=4_294_967_296), "seed", "between 0 and 4294967295"),
    ("seed-not-integer", ALEPH_MODEL_ID, lambda: aleph(seed=1.5), "seed", "integer"),
    ("layers-zero", VIDEO_LAYERS_MODEL_ID, lambda: layers(maxLayers=0), "maxLayers", "between 1 and 10"),
    ("layers-eleven", VIDEO_LAYERS_MODEL_ID, lambda: layers(maxLayers=11), "maxLayers", "between 1 and 10"),
    ("layers-fraction", VIDEO_LAYERS_MODEL_ID, lambda: layers(maxLayers=2.5), "maxLayers", "integer"),
    ("layers-as-text", VIDEO_LAYERS_MODEL_ID, lambda: layers(maxLayers="3"), "maxLayers", "number"),
    (
        "instruction-missing",
        VIDEO_LAYERS_MODEL_ID,
        lambda: layers(separationInstruction=None),
        "separationInstruction",
        "required",
    ),
    (
        "instruction-blank",
        VIDEO_LAYERS_MODEL_ID,
        lambda: layers(separationInstruction=" "),
        "separationInstruction",
        "empty",
    ),
    ("layers-unknown-field", VIDEO_LAYERS_MODEL_ID, lambda: layers(prompt="x"), "prompt", "Unknown input"),
    (
        "layers-video-unknown",
        VIDEO_LAYERS_MODEL_ID,
        lambda: layers(video="asset_gone"),
        "video",
        "does not exist",
    ),
    ("layers-video-is-image", VIDEO_LAYERS_MODEL_ID, lambda: layers(video=IDS.image), "video", "kind video"),
]


@pytest.mark.parametrize(
    ("model_id", "make_body", "field", "words"), [case[1:] for case in CASES], ids=[case[0] for case in CASES]
)
async def test_a_bad_body_is_refused_with_its_field_and_creates_no_job(
    asgi_client: httpx.AsyncClient,
    assets: Ids,
    model_id: str,
    make_body: Callable[[], Any],
    field: str,
    words: str,
) -> None:
    for params in ({}, {"dryRun": "true"}, {"dryRun": "api"}):
        response = await submit(asgi_client, model_id, make_body(), **params)
        assert response.status_code == 400, response.text
        body = response.json()
        assert f'"{field}"' in body["reason"], body["reason"]
        assert words in body["reason"], body["reason"]
        assert body["details"]["field"] == field
        assert body["traceId"]
    counters = await stats(asgi_client)
    assert counters["jobs_created"] == 0
    assert counters["dry_runs"] == 0


async def test_the_good_bodies_pass(
    asgi_client: httpx.AsyncClient, assets: Ids, emulator_state: EmulatorState
) -> None:
    # The base bodies of the cases above are valid: each refusal is due to its one change.
    emulator_state.configure(failure_rate=1.0)  # no model work needed here
    for model_id, body in ((ALEPH_MODEL_ID, aleph()), (VIDEO_LAYERS_MODEL_ID, layers())):
        assert (await submit(asgi_client, model_id, body, dryRun="true")).status_code == 269
        assert (await submit(asgi_client, model_id, body)).status_code == 200
    edge = aleph(keyframes=[keyframe(seconds=4.0), keyframe(at=1)], seed=4_294_967_295)
    assert (await submit(asgi_client, ALEPH_MODEL_ID, edge)).status_code == 200
    positioned = aleph(promptImage=[{"uri": IDS.image}])  # positionType has a default
    assert (await submit(asgi_client, ALEPH_MODEL_ID, positioned)).status_code == 200
    assert (await stats(asgi_client))["jobs_created"] == 4


@pytest.mark.parametrize("raw", [b"", b"not json", b"[1, 2]"])
async def test_a_body_that_is_not_a_json_object_is_refused(
    asgi_client: httpx.AsyncClient, assets: Ids, raw: bytes
) -> None:
    response = await asgi_client.post(
        f"generate/custom/{ALEPH_MODEL_ID}", content=raw, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert "body" in response.json()["reason"]
    assert (await stats(asgi_client))["jobs_created"] == 0


async def test_an_unknown_model_is_404_even_for_a_dry_run(
    asgi_client: httpx.AsyncClient, assets: Ids
) -> None:
    for params in ({}, {"dryRun": "true"}):
        response = await submit(asgi_client, "model_does-not-exist", aleph(), **params)
        assert response.status_code == 404
        assert response.json()["reason"] == "Model model_does-not-exist not found"


async def test_dry_run_costs_follow_the_clip_and_the_layers(
    asgi_client: httpx.AsyncClient, assets: Ids, emulator_state: EmulatorState
) -> None:
    async def cost(model_id: str, body: dict[str, Any]) -> float:
        response = await submit(asgi_client, model_id, body, dryRun="true")
        assert response.status_code == 269
        payload = response.json()
        assert payload["costDetails"] == {"custom-generation": payload["creativeUnitsCost"]}
        assert payload["creativeUnitsDiscount"] == 0
        return float(payload["creativeUnitsCost"])

    assert await cost(ALEPH_MODEL_ID, aleph()) == 40  # 10 CU x 4 s
    assert await cost(VIDEO_LAYERS_MODEL_ID, layers(maxLayers=2)) == 16  # 4 s x (2 + 2)
    assert await cost(VIDEO_LAYERS_MODEL_ID, layers(maxLayers=None)) == 32  # default 6 layers
    assert await cost(VIDEO_LAYERS_MODEL_ID, layers(maxLayers=10)) == 48
    counters = await stats(asgi_client)
    assert (counters["dry_runs"], counters["jobs_created"]) == (4, 0)
    assert not emulator_state.jobs
