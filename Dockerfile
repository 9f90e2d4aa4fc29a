# The ganflow image: the Prefect worker's flow runs, the Ray head and workers, and the MLflow
# tracking server all run it, so client and cluster always agree on Python, Ray and MLflow.
#
# CUDA's "base" flavour: the PyPI torch wheel ships its own CUDA runtime, cuDNN and NCCL, so the
# image only needs what makes the NVIDIA container toolkit mount the host driver (its
# NVIDIA_* variables) and a libc the wheels were built for. Pinned tag, never `latest`.
FROM nvidia/cuda:13.0.1-base-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
# wget: KubeRay's default liveness and readiness probes call it; bash: KubeRay starts `ray start` with it.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv wget ca-certificates bash \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv $VIRTUAL_ENV

WORKDIR /opt/ganflow
# Dependencies first, from pyproject.toml alone (a layer that survives code changes): the package
# set pyproject declares plus the `server` extra (MLflow's Postgres driver), at the versions
# infra/constraints.txt pins (torch 2.14.1 and torchvision 0.29.1 among them).
COPY pyproject.toml README.md ./
COPY infra/constraints.txt infra/constraints.txt
RUN pip install -c infra/constraints.txt ".[server]" && pip uninstall -y ganflow

# Then the code, installed editable: prefect.yaml's deployments run flows/pipeline.py from
# /opt/ganflow (the pull step's working directory), and state lands in /opt/ganflow/.ganflow.
COPY . .
# .ganflow exists in the image so that a volume mounted there starts out owned by the user.
RUN pip install --no-deps -e . \
 && useradd --create-home --uid 1000 ganflow && mkdir -p .ganflow && chown -R ganflow /opt/ganflow
USER ganflow
CMD ["ganflow", "--help"]
