# syntax=docker/dockerfile:1
# The kubenas operator image: `kubenas operator` with CPU PyTorch (the controller's
# policy runs in the operator; children train in the trainer image).
# Build from the repository root (the context is the repository, filtered by .dockerignore):
#   docker build -t ghcr.io/kubenas/operator:0.1.0 .
# It runs as UID/GID 65532 on a read-only root filesystem: it writes only under /tmp
# (an emptyDir in the Deployment), so bytecode is compiled at build time.

FROM python:3.11.14-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# CPU-only PyTorch from its own index first: PyPI's default wheel pulls in CUDA
# libraries (gigabytes) the operator never uses. The project's `torch>=2.1` then keeps it.
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
WORKDIR /src
COPY pyproject.toml README.md /src/
COPY operator/ /src/operator/
COPY trainer-image/kubenas_trainer/ /src/trainer-image/kubenas_trainer/
# The package (not editable: the source stays in this stage) with its runtime
# dependencies pinned to the versions the test suite runs with.
RUN pip install --no-cache-dir /src \
        "numpy==2.4.6" "scikit-learn==1.9.1" "pydantic==2.14.4" "PyYAML==6.0.4" "rich==15.0.0" \
        "matplotlib==3.11.2" "kopf==1.45.2" "kubernetes==37.0.2" "aiohttp==3.14.5" "cryptography==50.0.2" \
        "prometheus-client==0.26.0" \
    && python -m compileall -q /opt/venv/lib

FROM python:3.11.14-slim-bookworm
LABEL org.opencontainers.image.title="kubenas-operator" \
      org.opencontainers.image.description="kubenas operator: Neural Architecture Search with reinforcement learning on Kubernetes" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/kubenas/kubenas" \
      org.opencontainers.image.vendor="kubenas"
COPY --from=build /opt/venv /opt/venv
# No bytecode writes at run time (read-only root); HOME and matplotlib's cache dir on /tmp.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp
WORKDIR /tmp
USER 65532:65532
# 8080: Prometheus /metrics (--metrics-port); 8081: liveness /healthz (--liveness).
EXPOSE 8080 8081
ENTRYPOINT ["kubenas", "operator"]
