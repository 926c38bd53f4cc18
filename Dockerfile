# syntax=docker/dockerfile:1
# mednet-pvs BIDS App image (docs/containers.md).
#   GPU (default, PyTorch CUDA wheels):  docker build -t mednet-pvs:0.1.0 .
#   CPU only:                            docker build --build-arg TORCH_FLAVOUR=cpu -t mednet-pvs:0.1.0-cpu .
# The package, its atlases and its bundled models are inside; nothing is downloaded at run time.
# scripts/build_offline_image.sh builds the CPU variant from this file with no network at all.

ARG BASE_IMAGE=python:3.11-slim-bookworm

# ------------------------------------------------------------------ build: one virtual environment
FROM ${BASE_IMAGE} AS builder
# torch pinned to the version the project is developed and tested with (setup.cfg: torch>=2.1)
ARG TORCH_VERSION=2.13.0
# "cu130" (PyTorch's CUDA 13.0 wheels, NVIDIA driver >= 580) or "cpu"; any flavour the PyTorch
# index offers for TORCH_VERSION works, e.g. an older CUDA for older drivers
ARG TORCH_FLAVOUR=cu130
# Where pip finds torch, then everything else. The offline build points both at a wheel folder.
ARG TORCH_PIP_SOURCES="--index-url https://download.pytorch.org/whl/${TORCH_FLAVOUR}"
ARG PIP_SOURCES=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
# torch first, from the flavour's index, so the package's torch requirement is already met.
# The *_PIP_SOURCES variables hold several pip options, so they are expanded unquoted on purpose.
# hadolint ignore=SC2086
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir ${TORCH_PIP_SOURCES} "torch==${TORCH_VERSION}"
COPY setup.cfg pyproject.toml README.md LICENSE /src/
COPY mednet_pvs /src/mednet_pvs
# bids-validator-deno: the validator mednet-pvs runs before processing (a test extra outside images)
# hadolint ignore=SC2086
RUN /opt/venv/bin/pip install --no-cache-dir ${PIP_SOURCES} /src "bids-validator-deno>=2" \
    && /opt/venv/bin/mednet-pvs --version \
    && /opt/venv/bin/mednet-pvs-models list

# ------------------------------------------------------------------------------ runtime
FROM ${BASE_IMAGE} AS runtime
ARG BASE_IMAGE
ARG TORCH_FLAVOUR=cu130
ARG VERSION=0.1.0
ARG VCS_REF=""
LABEL org.opencontainers.image.title="mednet-pvs" \
      org.opencontainers.image.description="BIDS App: perivascular space (PVS) segmentation with MedNeXt and per-region PVS statistics" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/mednet-pvs/mednet-pvs" \
      org.opencontainers.image.url="https://github.com/mednet-pvs/mednet-pvs" \
      org.opencontainers.image.documentation="https://github.com/mednet-pvs/mednet-pvs/blob/main/docs/containers.md" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.revision="${VCS_REF}" \
      org.opencontainers.image.base.name="${BASE_IMAGE}" \
      io.github.mednet-pvs.torch-flavour="${TORCH_FLAVOUR}"

RUN useradd --create-home --home-dir /home/mednet --uid 1000 --user-group --shell /bin/sh mednet
COPY --from=builder /opt/venv /opt/venv

# Every folder the stack writes to lies under HOME; a read-only or foreign HOME (Apptainer,
# docker run -u) is handled at run time (mednet_pvs.utils.environment) and documented.
ENV PATH="/opt/venv/bin:${PATH}" \
    HOME=/home/mednet \
    XDG_CACHE_HOME=/home/mednet/.cache \
    XDG_CONFIG_HOME=/home/mednet/.config \
    MPLCONFIGDIR=/home/mednet/.config/matplotlib \
    MPLBACKEND=Agg \
    NIPYPE_CONFIG_DIR=/home/mednet/.nipype \
    NIPYPE_NO_ET=1 \
    DENO_DIR=/home/mednet/.cache/deno \
    DENO_NO_UPDATE_CHECK=1 \
    TORCH_HOME=/home/mednet/.cache/torch \
    MEDNET_PVS_HOME=/home/mednet/.cache/mednet-pvs \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MEDNET_PVS_CONTAINER_TYPE=docker \
    MEDNET_PVS_CONTAINER_TAG="mednet-pvs:${VERSION}-${TORCH_FLAVOUR}" \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

USER 1000:1000
WORKDIR /home/mednet
# Build matplotlib's font cache once; then let any user id (docker run -u) write in HOME.
RUN mkdir -p "${MEDNET_PVS_HOME}/models" "${NIPYPE_CONFIG_DIR}" "${DENO_DIR}" "${TORCH_HOME}" \
    && python -c "import matplotlib.font_manager" \
    && chmod -R go=u /home/mednet

ENTRYPOINT ["mednet-pvs"]
CMD ["--help"]
