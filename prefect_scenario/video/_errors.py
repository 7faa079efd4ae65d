"""The exception the video modules raise for bad media, taken from the package's error tree."""

from prefect_scenario.errors import MediaError

__all__ = ["MediaError"]
