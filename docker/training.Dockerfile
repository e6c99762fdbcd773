# syntax=docker/dockerfile:1
# Training and export on a GPU (`glimpse train`, entrypoint; `glimpse export` with --entrypoint glimpse ... export).
# TensorFlow comes with the base image (CUDA and cuDNN included); the project's other dependencies are installed
# on top. Exports go to /models (mount the models volume there), TensorBoard runs to /runs.
#   docker build -f docker/training.Dockerfile -t glimpse/training .
#   docker run --gpus all -v "$PWD/models:/models" glimpse/training --dataset tuxpaint --model efficientnet_lite0
# CPU-only: --build-arg BASE_IMAGE=tensorflow/tensorflow:2.21.0
ARG BASE_IMAGE=tensorflow/tensorflow:2.21.0-gpu
FROM ${BASE_IMAGE}

# The offline datasets (Tux Paint photos, Fashion-MNIST) are Debian/Ubuntu packages; set DATA_PACKAGES="" to skip
# them and mount a `folder:` dataset instead.
ARG DATA_PACKAGES="tuxpaint-stamps-default dataset-fashion-mnist"
# hadolint ignore=DL3008
RUN if [ -n "${DATA_PACKAGES}" ]; then \
        apt-get update \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${DATA_PACKAGES} \
        && rm -rf /var/lib/apt/lists/*; \
    fi

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_BREAK_SYSTEM_PACKAGES=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TF_CPP_MIN_LOG_LEVEL=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    KERAS_HOME=/tmp/keras
WORKDIR /src
COPY pyproject.toml README.md ./
COPY glimpse ./glimpse
COPY glimpse_wire ./glimpse_wire
COPY rendering ./rendering
COPY training ./training
COPY serving ./serving
COPY explain_api ./explain_api
COPY whatif ./whatif
COPY studies ./studies
# TensorFlow is already in the base image at the pinned version, so pip keeps it and adds the rest.
RUN python3 -m pip install --no-cache-dir . && glimpse --help > /dev/null

RUN groupadd --gid 1000 glimpse \
    && useradd --uid 1000 --gid glimpse --create-home --shell /bin/bash glimpse \
    && mkdir -p /models /runs \
    && chown glimpse:glimpse /models /runs
USER 1000:1000
WORKDIR /home/glimpse
VOLUME ["/models", "/runs"]
ENTRYPOINT ["glimpse", "train"]
CMD ["--dataset", "tuxpaint", "--model", "efficientnet_lite0", "--export-dir", "/models", "--logdir", "/runs"]
