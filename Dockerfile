# syntax=docker/dockerfile:1
#
# The one Asya image. The same image serves three uses, chosen by the arguments given to
# its `asya` entrypoint:
#
#   asya operator --config /etc/asya/operator.yaml   the kopf operator (AsyncActor -> queue,
#                                                    Deployment, KEDA ScaledObject)
#   asya sidecar                                     the sidecar the operator injects into every
#                                                    actor pod (configured by ASYA_* env)
#   asya crew sink | asya crew sump                  the crew actors' handlers (x-sink, x-sump)
#
# and, as the image of an actor whose handler is a built-in caller (asya_callers.openai.Chat.handle,
# ...) when its AsyncActor gives no image of its own.
#
# The crew actors are rendered like every other actor: their `asya-runtime` container runs
# `python3 /opt/asya/runtime.py` (the runtime file from the actor's ConfigMap) with
# ASYA_HANDLER=asya_crew.sink.Sink.handle or asya_crew.sump.Sump.handle. PATH below puts the
# virtual environment first, so that `python3` is the venv's interpreter and imports
# asya_crew (or asya_callers, for a built-in caller) from it.
#
# User handler images need none of this: the runtime is one standard-library file that the
# operator mounts into them.
#
# Build:  docker build -t asya:0.1.0 .
# Check:  .venv/bin/pytest tests/test_image.py  (parses this file and replays its install)

# Both stages must use the same interpreter: the venv copied into the final stage links to it.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------- builder
FROM ${PYTHON_IMAGE} AS builder

# Which optional dependencies go into the image: every broker SDK, the S3 result store and
# the operator. Never `test`, `dev` or `examples`.
ARG ASYA_EXTRAS=all

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
# Only what the wheel is built from; constraints.txt pins the versions CI tests with.
COPY pyproject.toml README.md constraints.txt ./
COPY asya_callers/ asya_callers/
COPY asya_cli/ asya_cli/
COPY asya_crew/ asya_crew/
COPY asya_gateway/ asya_gateway/
COPY asya_operator/ asya_operator/
COPY asya_runtime/ asya_runtime/
COPY asya_shared/ asya_shared/
COPY asya_sidecar/ asya_sidecar/
COPY asya_sump/ asya_sump/
COPY asya_transports/ asya_transports/

# A venv without pip or setuptools: the base image's pip installs into it from outside, so
# the final image carries no installer. Binary wheels only: nothing is compiled, so the
# builder needs no compiler either. pip compiles the bytecode while installing; at run time
# nothing is written.
RUN python -m venv --without-pip /opt/venv
RUN --mount=type=cache,target=/root/.cache/pip \
    pip wheel --no-deps --wheel-dir /wheels /src \
    && pip --python /opt/venv/bin/python install --only-binary=:all: \
        -c /src/constraints.txt "$(ls /wheels/asya-*.whl)[${ASYA_EXTRAS}]"

# ------------------------------------------------------------------------------------ final
FROM ${PYTHON_IMAGE}

ARG PYTHON_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="asya" \
      org.opencontainers.image.description="Asya operator, sidecar and crew: asynchronous actors for multi-step AI pipelines on Kubernetes" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"

# HOME is /tmp, the one writable place (an emptyDir) when the root filesystem is read-only:
# whatever a library caches under ~ lands there.
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp

# A named user for the numeric id (some libraries look the user up), and the socket
# directory for runs outside Kubernetes; in a pod /var/run/asya and /tmp are emptyDirs.
RUN groupadd --system --gid 65532 asya \
    && useradd --system --uid 65532 --gid 65532 --home-dir /tmp --no-create-home \
        --shell /usr/sbin/nologin asya \
    && mkdir -p /var/run/asya \
    && chown 65532:65532 /var/run/asya

COPY --from=builder /opt/venv /opt/venv

# Empty and read-only: nothing runs from here, and the runtime imports handlers from the
# working directory (the crew's come from the venv).
WORKDIR /app
USER 65532:65532

# The sidecar's /metrics and /healthz (`asya crew` serves its own metrics on 8081).
EXPOSE 8080

ENTRYPOINT ["asya"]
CMD ["--help"]
