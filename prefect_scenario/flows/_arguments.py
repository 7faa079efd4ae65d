"""Option records filled from a flow's own arguments, so each option is spelled once, where declared.

A flow's signature is its Prefect form and must list every parameter; the records that carry those
parameters down (``BatchOptions``, ``GenerationOptions``, ``JobRunner``) take them by name instead of
a second hand-written list that could drift from the first.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

    OptionsT = TypeVar("OptionsT", bound=DataclassInstance)
else:
    OptionsT = TypeVar("OptionsT")


@dataclass(frozen=True, kw_only=True)
class RunChoices:
    """What every generation flow lets a user choose, single clip or batch, with the same defaults."""

    destination: str = "scenario-outputs"
    refresh: bool = False
    timeout_seconds: float = 3600
    dry_run: bool = False


def options_from(cls: type[OptionsT], arguments: Mapping[str, Any], **overrides: Any) -> OptionsT:
    """A ``cls`` whose fields take the same-named ``arguments`` (a flow's ``locals()``), then ``overrides``.

    Example:
        ```python
        options = options_from(GenerationOptions, locals(), credentials=creds)
        ```
    """
    names = {field.name for field in dataclasses.fields(cls)}
    values = {name: value for name, value in arguments.items() if name in names}
    return cls(**{**values, **overrides})
