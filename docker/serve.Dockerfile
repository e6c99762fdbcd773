# syntax=docker/dockerfile:1
# `glimpse serve` (`python -m serving`) on the CPU: the TF-Serving-compatible server for machines without the
# tensorflow/serving image. Same flags, files and ports as tensorflow/serving, and the same entry: MODEL_NAME and
# MODEL_BASE_PATH pick the model, any further arguments are appended (a later flag wins, so `--model_config_file=...`
# or `--enable_batching=true ...` work exactly as with TF Serving's image).
#   docker build -f docker/serve.Dockerfile -t glimpse/serve .
#   docker run -p 8500:8500 -p 8501:8501 -v "$PWD/models:/models:ro" -e MODEL_NAME=tuxpaint glimpse/serve
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY docker/serve.requirements.txt ./
RUN pip install --no-cache-dir -r serve.requirements.txt
COPY pyproject.toml README.md ./
COPY glimpse ./glimpse
COPY glimpse_wire ./glimpse_wire
COPY serving ./serving
RUN pip install --no-cache-dir --no-deps . && python -m serving --help > /dev/null

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="glimpse-serve" \
      org.opencontainers.image.description="glimpse serve: a TF-Serving-compatible model server (CPU)" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TF_CPP_MIN_LOG_LEVEL=1 \
    MODEL_NAME=model \
    MODEL_BASE_PATH=/models
RUN groupadd --system --gid 10001 glimpse \
    && useradd --system --uid 10001 --gid glimpse --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin glimpse \
    && mkdir -p /models \
    && chown glimpse:glimpse /models
COPY --from=builder /opt/venv /opt/venv
USER 10001:10001
WORKDIR /tmp
EXPOSE 8500 8501
# No curl in slim images: the interpreter asks REST for the model's status (needs --rest_api_port=8501).
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(b'AVAILABLE' not in urllib.request.urlopen('http://127.0.0.1:8501/v1/models/' + os.environ['MODEL_NAME'], timeout=4).read())"]
ENTRYPOINT ["/bin/sh", "-c", "exec python -m serving --port=8500 --rest_api_port=8501 --model_name=\"${MODEL_NAME}\" --model_base_path=\"${MODEL_BASE_PATH}/${MODEL_NAME}\" \"$@\"", "glimpse-serve"]
