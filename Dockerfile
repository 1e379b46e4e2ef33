# fraudstream in one image: the trainer, the workers and the ops tools (load generator, DLQ replay).
#
#   docker build -t fraudstream:cpu .                           # default: ONNX Runtime's CPU provider
#   docker build --build-arg VARIANT=gpu -t fraudstream:gpu .   # + CUDA 13 and cuDNN 9 (PyPI wheels)
#
# One Dockerfile with a VARIANT build arg rather than a Dockerfile.gpu: the two images differ only
# in which lock files ops/docker/install.sh installs. The CUDA and cuDNN libraries come from PyPI
# (onnxruntime-gpu[cuda,cudnn]; the worker preloads them, workers/score.py) and the driver is put in
# the container by the NVIDIA container toolkit, so the GPU image needs no CUDA base image, and a
# second file could only drift from this one. Both images carry onnxruntime-gpu: without the CUDA
# wheels it runs the CPU provider.
#
# Reproducible: ops/docker/install.sh installs only the pinned, hashed wheels of
# ops/docker/requirements*.lock (regenerate with `python -m ops.docker.lock`), --no-deps, nothing
# compiled; the build stage is discarded, so no pip cache, sources or build tools reach the image.
# PYTHON_IMAGE may be pinned to a digest (python:3.11-slim@sha256:...) for a bit-for-bit base.
# Runs as the unprivileged user fraudstream (uid 10001); bundles live in the /bundles volume.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ARG VARIANT=cpu
ENV VIRTUAL_ENV=/opt/venv \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
# The dependency layer first: it is rebuilt only when the lock files or the script change.
COPY ops/docker/install.sh ops/docker/requirements.lock ops/docker/requirements-gpu.lock ops/docker/
RUN sh ops/docker/install.sh deps "$VIRTUAL_ENV" "$VARIANT"
COPY pyproject.toml README.md ./
COPY schemas/ schemas/
COPY trainer/ trainer/
COPY workers/ workers/
COPY ops/ ops/
RUN sh ops/docker/install.sh project "$VIRTUAL_ENV"

FROM ${PYTHON_IMAGE}
ARG VARIANT=cpu
LABEL org.opencontainers.image.title="fraudstream" \
      org.opencontainers.image.description="Kafka -> Faust workers -> ONNX Runtime fraud scoring; LightGBM trainer" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.fraudstream.variant="${VARIANT}"
# LightGBM (the trainer, and the workers' reason codes) links the system's OpenMP runtime, which the slim
# base lacks: the one package the image adds, without recommends, its apt lists removed.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 fraudstream \
    && useradd --system --uid 10001 --gid fraudstream --home-dir /app --shell /usr/sbin/nologin fraudstream \
    && mkdir -p /app /bundles \
    && chown fraudstream:fraudstream /app /bundles
# The venv stays owned by root: read-only to the user the container runs as.
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    HOME=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    FRAUDSTREAM_IMAGE_VARIANT=${VARIANT} \
    FRAUDSTREAM_BUNDLES=/bundles \
    FRAUDSTREAM_BUNDLE=/bundles/latest \
    FRAUDSTREAM_DATA=/app/data \
    FRAUDSTREAM_DATA_DIR=/app/state \
    FRAUDSTREAM_METRICS_PORT=9400
# fraudstream, by number (Kubernetes' runAsNonRoot can only check a numeric user).
USER 10001:10001
WORKDIR /app
# A named volume mounted here starts as a copy of this (empty, fraudstream-owned) directory.
VOLUME ["/bundles"]
EXPOSE 9400
CMD ["python", "-m", "workers"]
