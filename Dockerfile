# The image for prefect-scenario's container work pools (prefect.yaml: definitions.work_pools.docker
# and .kubernetes). Prefect, prefect-aws and the flows, at the versions constraints.txt pins; no dev
# tools, no PostgreSQL (the server runs elsewhere: workers and flow runs only talk to its API).
#
#   docker build -t prefect-scenario:0.1.0 .
#   docker run --rm prefect-scenario:0.1.0                     # prefect-scenario --help
#
# tests/e2e/test_container_image.py checks, without Docker, that this file installs only versions
# constraints.txt pins, on a Python that pyproject.toml allows.

# 3.11: the Python constraints.txt was frozen on (README, "Versions tested"); pyproject allows >=3.11.
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Only what the package build reads (.dockerignore keeps the rest out of the context).
WORKDIR /tmp/prefect-scenario
COPY pyproject.toml constraints.txt README.md ./
COPY prefect_scenario ./prefect_scenario
# -c constraints.txt: every dependency at its pinned version; `.`, no extras: the runtime only.
# pip check: the installed set is consistent. The sources go: the package is in site-packages now.
RUN pip install -c constraints.txt . \
    && pip check \
    && rm -rf /tmp/prefect-scenario

# Non-root, and numeric, so Kubernetes' runAsNonRoot can verify it. /opt/prefect is where flow runs
# start (prefect.yaml's container pull step) and where relative destinations land.
RUN useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin prefect \
    && mkdir -p /opt/prefect \
    && chown prefect:prefect /opt/prefect
USER 10001:10001
WORKDIR /opt/prefect

# The worker sets the command of each flow run's container (prefect flow-run execute).
CMD ["prefect-scenario", "--help"]
