"""Reading py-spy's collapsed stacks (``py-spy record --format raw``): where the samples went.

A line of the file is ``frame;frame;...;frame COUNT``, the root first; a frame reads
``function (path/to/file.py:line)``. Self time is the leaf frame's; inclusive time counts a function
once per sample whatever its depth.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^():]*)(?::(?P<line>\d+))?\)$")
_IDLE = (
    "select (selectors.py",
    "_run_once (asyncio/base_events.py",
    "wait (threading.py",
    "poll (selectors.py",
)


def _short(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match.group("file")
    for marker in ("site-packages/", "lib/python3.11/", "lib/python3.12/", "lib/python3.10/", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{match.group('function')} ({path})"


def _module(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    path = match.group("file") if match else frame
    for marker in ("site-packages/", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    else:
        return "python stdlib" if "python3" in path else path.split("/")[0]
    return path.split("/")[0].replace(".py", "")


def summarize(path: Path, top: int = 15) -> dict[str, Any]:
    """Top self-time and inclusive-time functions, and samples per top-level package."""
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    total = idle = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [frame for frame in stack.split(";") if frame and not frame.startswith("process ")]
        if not frames:
            continue
        total += count
        leaf = frames[-1]
        if any(marker in leaf for marker in _IDLE):
            idle += count
        self_time[_short(leaf)] += count
        packages[_module(leaf)] += count
        for name in {_short(frame) for frame in frames}:
            inclusive[name] += count

    def table(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"function": name, "samples": count, "share": round(count / total, 3) if total else 0.0}
            for name, count in counter.most_common(top)
        ]

    return {
        "file": str(path),
        "samples": total,
        "idle_share": round(idle / total, 3) if total else 0.0,
        "self": table(self_time),
        "inclusive": table(inclusive),
        "packages": table(packages),
    }
