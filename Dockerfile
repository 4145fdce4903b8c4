# newsbias images: `--target gpu` (CUDA runtime + CUDA torch) or `--target cpu` (slim Python + CPU torch).
#   docker build --target gpu -t newsbias:gpu .
#   docker build --target cpu -t newsbias:cpu .
# The entrypoint is the `newsbias` CLI: `docker run ... newsbias:gpu train -c configs/x.yaml`.
# Models and data are mounted, never baked in; /cache/hf holds downloaded hub models.

ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------- gpu
FROM ${CUDA_IMAGE} AS gpu
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
ENV DEBIAN_FRONTEND=noninteractive PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 HF_HOME=/cache/hf PATH=/opt/venv/bin:$PATH
# apt versions differ per base image tag: the tag is the pin
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv
RUN pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"
WORKDIR /opt/newsbias
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
# the project itself; its dependencies are bounded in pyproject.toml
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[serve]" \
    && useradd --create-home --uid 1000 newsbias \
    && mkdir -p /cache/hf /work \
    && chown newsbias:newsbias /cache/hf /work
USER 1000:1000
WORKDIR /work
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
ENTRYPOINT ["newsbias"]
CMD ["--help"]

# ---------------------------------------------------------------------------------------- cpu
FROM ${PYTHON_IMAGE} AS cpu
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/cache/hf
RUN pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"
WORKDIR /opt/newsbias
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
# the project itself; its dependencies are bounded in pyproject.toml
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[serve]" \
    && useradd --create-home --uid 1000 newsbias \
    && mkdir -p /cache/hf /work \
    && chown newsbias:newsbias /cache/hf /work
USER 1000:1000
WORKDIR /work
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
ENTRYPOINT ["newsbias"]
CMD ["--help"]
