# nats-rollouts: one image for the four services; the service is picked by the command,
# e.g. `docker run IMAGE run planner` (see compose.yaml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# Only what the package needs (keeps .venv and caches out of the image without a .dockerignore).
# README.md* : pyproject.toml names a readme; the glob lets the build pass whether or not it exists.
COPY pyproject.toml README.md* ./
COPY shared ./shared
COPY services ./services
RUN pip install .

# Local mode: replica logs go to $ROLLOUTS_STATE_DIR/replicas. The services run as an unprivileged
# user (uid 65532, as deploy/kubernetes/*.yaml's securityContext expects).
ENV ROLLOUTS_STATE_DIR=/var/lib/rollouts
RUN useradd --uid 65532 --no-create-home --shell /usr/sbin/nologin rollouts \
    && mkdir -p /var/lib/rollouts && chown rollouts /var/lib/rollouts
USER 65532

ENTRYPOINT ["rollouts"]
CMD ["--help"]
