"""The Run form Prefect draws from each flow's schema: plain optional fields, nothing to click first.

The schema is built as ``prefect deploy`` and ``flow.serve`` build it (``parameter_schema(flow)``),
then stored in a deployment of the session's Prefect server, which checks the parameters of every
run it is asked to create against it.
"""

from __future__ import annotations

import inspect
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect import Flow, get_client
from prefect.exceptions import PrefectHTTPStatusError
from prefect.filesystems import LocalFileSystem
from prefect.utilities.callables import parameter_schema

from prefect_scenario import flows
from prefect_scenario.flows import aleph_edit, video_to_layers

FLOWS = [made for made in vars(flows).values() if isinstance(made, Flow)]


def _form_fields(schema: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every field the form draws: the parameters, and the fields of the models they hold.

    A block's definition is left out: the form offers a picker of saved blocks for it, not fields.
    """
    for name, field in schema["properties"].items():
        yield name, field
    for model, definition in schema.get("definitions", {}).items():
        if "block_type_slug" not in definition:
            for name, field in definition.get("properties", {}).items():
                yield f"{model}.{name}", field


def test_every_flow_of_the_package_is_checked() -> None:
    assert {made.name for made in FLOWS} == {
        "video-to-layers",
        "aleph-edit",
        "video-to-layers-batch",
        "aleph-edit-batch",
    }


@pytest.mark.parametrize("made", FLOWS, ids=lambda made: made.name)
def test_no_optional_field_opens_on_a_null_type_switch_or_a_null_value(made: Flow[Any, Any]) -> None:
    schema = parameter_schema(made).model_dump()
    nullable = [name for name, field in _form_fields(schema) if {"type": "null"} in field.get("anyOf", [])]
    null_defaults = [
        name for name, field in _form_fields(schema) if "default" in field and field["default"] is None
    ]
    assert nullable == [name for name in nullable if name == "concurrency_limit_name"]
    assert null_defaults == []
    # What the flow object carries is what its deployments get, and a copy made with options too.
    assert made.parameters.model_dump() == schema
    assert parameter_schema(made.with_options(retries=2)).model_dump() == schema


@pytest.mark.parametrize("made", FLOWS, ids=lambda made: made.name)
def test_a_parameter_left_empty_is_optional_in_the_form_and_none_in_the_call(made: Flow[Any, Any]) -> None:
    schema = parameter_schema(made).model_dump()
    defaults_none = [name for name, p in inspect.signature(made.fn).parameters.items() if p.default is None]
    assert defaults_none, "every flow has optional parameters"
    for name in defaults_none:
        assert name not in schema["required"]
        assert "default" not in schema["properties"][name], name
    # Only the form's schema changes: the function the run calls keeps None as its default.
    bound = inspect.signature(made.fn).bind_partial()
    bound.apply_defaults()
    assert all(bound.arguments[name] is None for name in defaults_none)


@pytest.mark.parametrize("made", FLOWS, ids=lambda made: made.name)
def test_storage_is_a_saved_blocks_name_and_credentials_keep_their_block_picker(made: Flow[Any, Any]) -> None:
    properties = parameter_schema(made).model_dump()["properties"]
    assert properties["video_storage"]["type"] == "string"
    assert properties["destination_storage"]["type"] == "string"
    assert properties["credentials"]["anyOf"] == [
        {"$ref": "#/definitions/ScenarioCredentials"},
        {"type": "string"},
    ]


@pytest.fixture
async def deployment_of() -> Any:
    """Deployments of the package's flows on the session's server, with the schema enforced."""
    made_ids: list[uuid.UUID] = []

    async def create(made: Flow[Any, Any]) -> uuid.UUID:
        async with get_client() as client:
            flow_id = await client.create_flow(made)
            deployment_id = await client.create_deployment(
                flow_id=flow_id,
                name=f"run-form-{uuid.uuid4().hex[:8]}",
                parameter_openapi_schema=parameter_schema(made).model_dump(),
                enforce_parameter_schema=True,
            )
        made_ids.append(deployment_id)
        return deployment_id

    yield create
    async with get_client() as client:
        for deployment_id in made_ids:
            await client.delete_deployment(deployment_id)


async def test_the_server_takes_a_run_with_optional_fields_left_out_and_a_storage_name(
    deployment_of: Any,
) -> None:
    deployment_id = await deployment_of(video_to_layers)
    async with get_client() as client:
        run = await client.create_flow_run_from_deployment(
            deployment_id,
            parameters={
                "video": "take-1.mp4",
                "separation_instruction": "each dancer apart from the stage",
                "video_storage": "local-file-system/footage",
            },
        )
        await client.delete_flow_run(run.id)


async def test_an_empty_keyframe_item_is_refused_with_the_missing_field_named(deployment_of: Any) -> None:
    deployment_id = await deployment_of(aleph_edit)
    async with get_client() as client:
        with pytest.raises(PrefectHTTPStatusError) as refused:
            await client.create_flow_run_from_deployment(
                deployment_id, parameters={"video": "take-1.mp4", "prompt": "snow", "keyframes": [{}]}
            )
    assert refused.value.response.status_code == 409
    assert "'image' is a required property" in refused.value.response.text
    assert "keyframes" in refused.value.response.text


async def test_a_keyframe_with_neither_time_is_refused_naming_seconds_and_at(
    credentials: Any, sample_clip: Path, sample_image: Path, tmp_path: Path
) -> None:
    state = await aleph_edit(
        str(sample_clip),
        "snow",
        keyframes=[{"image": str(sample_image)}],  # type: ignore[list-item]  # as a deployment sends it
        destination=str(tmp_path / "out"),
        credentials=credentials,
        return_state=True,
    )
    assert state.is_failed()
    assert "needs exactly one of 'seconds' or 'at'" in str(state.message)


async def test_a_single_clip_flow_reads_its_clip_from_a_saved_block_named_in_the_form(
    credentials: Any, sample_clip: Path, tmp_path: Path
) -> None:
    footage = tmp_path / "footage"
    footage.mkdir()
    shutil.copyfile(sample_clip, footage / "take-1.mp4")
    name = f"footage-{uuid.uuid4().hex[:8]}"
    await LocalFileSystem(basepath=str(footage)).asave(name)

    result = await video_to_layers(
        "take-1.mp4",
        "each moving object apart from the background",
        video_storage=f"local-file-system/{name}",
        destination=str(tmp_path / "out"),
        credentials=credentials,
        dry_run=True,
    )

    assert result.is_dry_run
    assert result.estimated_creative_units is not None


async def test_a_storage_name_that_is_not_a_saved_block_is_refused_before_any_upload(
    credentials: Any, sample_clip: Path, tmp_path: Path
) -> None:
    state = await video_to_layers(
        str(sample_clip),
        "each moving object apart from the background",
        destination_storage="s3-bucket/no-such-bucket-block",
        destination=str(tmp_path / "out"),
        credentials=credentials,
        return_state=True,
    )
    assert state.is_failed()
    assert "destination_storage 's3-bucket/no-such-bucket-block': no such saved block" in str(state.message)
