# syntax=docker/dockerfile:1
# The explain API (`python -m explain_api`, the same as `glimpse api`): Flask under gunicorn (gthread), calling TF
# Serving over gRPC through the TensorFlow-free wire package. No TensorFlow in this image.
#   docker build -f docker/explain-api.Dockerfile -t glimpse/explain-api .
#   docker run -p 8080:8080 -e SERVING_ADDRESS=serving:8500 -e GLIMPSE_DEFAULT_MODEL=tuxpaint glimpse/explain-api
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- builder: a venv with the pinned requirement set and the project's TF-free packages --------------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY docker/explain-api.requirements.txt ./
RUN pip install --no-cache-dir -r explain-api.requirements.txt
# Only the packages the API runs: the CLI, the wire package, rendering (images, overlays, video) and the API itself
# (see .dockerignore for the rest).
COPY pyproject.toml README.md ./
COPY glimpse ./glimpse
COPY glimpse_wire ./glimpse_wire
COPY rendering ./rendering
COPY explain_api ./explain_api
# --no-deps: the project's main dependencies include TensorFlow; the requirement set above is complete.
RUN pip install --no-cache-dir --no-deps . \
    && python -c "import importlib.util as u, sys; sys.exit(u.find_spec('tensorflow') is not None)" \
    && python -m explain_api --help > /dev/null

# --- runtime: the venv on a slim Python, as an unprivileged user ---------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="glimpse-explain-api" \
      org.opencontainers.image.description="Glimpse explain API: Grad-CAM, occlusion and gradient maps over HTTP" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SERVING_ADDRESS=serving:8500
RUN groupadd --system --gid 10001 glimpse \
    && useradd --system --uid 10001 --gid glimpse --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin glimpse
COPY --from=builder /opt/venv /opt/venv
USER 10001:10001
WORKDIR /tmp
EXPOSE 8080
# Liveness of the process (/healthz); /readyz additionally needs the model server and is for orchestrators.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status != 200)"]
ENTRYPOINT ["python", "-m", "explain_api"]
CMD ["--host", "0.0.0.0", "--port", "8080"]
