# syntax=docker/dockerfile:1
# One image for both roles of modelwarden:
#   operator:      docker run IMAGE                 (CMD `run`; liveness on :8081/healthz, metrics on :8082)
#   model server:  docker run IMAGE serve           (the operator's model pods; env MODEL_URI, MODEL_VERSION,
#                                                    MODEL_TRACK, MODEL_NAME, PORT; probes /v2/health/{ready,live})
#
# Multi-stage: the build stage builds the wheel and installs it with its dependencies into a venv
# at /opt/modelwarden; the final stage copies only that venv (no pip cache, no sources, no build tools).
# Both stages use the same base image, so the venv's interpreter symlink stays valid.
#
# The runtime is read-only-root-filesystem friendly: bytecode is compiled at build time by pip,
# PYTHONDONTWRITEBYTECODE stops writes at runtime, and HOME/TMPDIR point at /tmp (mount an emptyDir
# there in Kubernetes, as manifests/ and the Helm chart do).

# Pinned by version tag (never `latest`); bump deliberately. Override with --build-arg PYTHON_IMAGE=...
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
RUN python -m venv /opt/modelwarden
# Only what the wheel needs (see .dockerignore): metadata first, then the import package.
COPY pyproject.toml README.md ./
COPY operator ./operator
# Every dependency ships manylinux wheels for CPython 3.11, so no compiler is needed even here.
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/modelwarden/bin/pip install /wheels/modelwarden-*.whl \
 && /opt/modelwarden/bin/python -m pip uninstall --yes --quiet pip setuptools

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="modelwarden" \
      org.opencontainers.image.description="Kubernetes operator that keeps deployed ML models healthy (and its model server)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/modelwarden/modelwarden"
COPY --from=build /opt/modelwarden /opt/modelwarden
ENV PATH=/opt/modelwarden/bin:$PATH \
    HOME=/tmp \
    TMPDIR=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# A numeric non-root user (distroless's "nonroot" ids), so runAsNonRoot can verify it without /etc/passwd.
USER 65532:65532
WORKDIR /tmp
# 8080: model server (serve); 8081: operator liveness; 8082: operator metrics.
EXPOSE 8080 8081 8082
# For plain Docker only (Kubernetes ignores HEALTHCHECK and uses the probes in manifests/ and the chart):
# model pods have PORT set and answer /v2/health/live; the operator answers /healthz on 8081.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD python -c "import os, urllib.request; p = os.environ.get('PORT'); urllib.request.urlopen(f'http://127.0.0.1:{p}/v2/health/live' if p else 'http://127.0.0.1:8081/healthz', timeout=4)"
ENTRYPOINT ["modelwarden"]
CMD ["run"]
