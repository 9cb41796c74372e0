# syntax=docker/dockerfile:1
#
# One image for every chatcluster process. The entry point is the `chatcluster` command; the
# container's arguments choose the process:
#
#   chatcluster gateway   --host 0.0.0.0 --port 8080
#   chatcluster socket    --host 0.0.0.0 --port 8080 --replica-id ID --public-url URL
#   chatcluster consumers --host 0.0.0.0 --port 8080
#   chatcluster operator
#
# Why one image (docs/kubernetes.md): the four processes are one Python package with one
# dependency set, so per-service images would be the same layers under four names; one image
# means one build, one tag to pin in a ChatCluster, and a gateway and socket replicas that can
# never run different versions of the wire protocol by accident.
#
# The base is a parameter so that a local base can stand in for it where no registry can be
# reached (tests/packaging/test_image_build.py builds from a debootstrap'ed Debian). Any base with
# `python3 -m venv` works; the two stages must use the same one (the venv links to its python).
ARG PYTHON_IMAGE=python:3.12.8-slim-bookworm

# --- build: install the package and its dependencies into a self-contained venv ---------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python3 -m venv /opt/chatcluster
# The dependencies first, from pyproject.toml alone: a change to the code reuses this layer
# and rebuilds in seconds. (tomllib: Python >= 3.11, as the package requires.)
COPY pyproject.toml ./
RUN python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' > requirements.txt \
    && /opt/chatcluster/bin/pip install --no-cache-dir -r requirements.txt
COPY README.md ./
COPY services ./services
COPY operator ./operator
RUN /opt/chatcluster/bin/pip install --no-cache-dir --no-deps . \
    && /opt/chatcluster/bin/chatcluster --version

# --- runtime: the venv, an unprivileged user, nothing else --------------------------------------
FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="chatcluster" \
      org.opencontainers.image.description="Multi-tenant real-time chat backend: gateway, socket replicas, event-pipeline consumers and the Kubernetes operator, in one image" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed numeric uid/gid so Kubernetes' runAsNonRoot can verify it without a passwd lookup.
RUN groupadd --system --gid 10001 chatcluster \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/chatcluster \
       --no-create-home --shell /usr/sbin/nologin chatcluster \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/chatcluster
COPY --from=build /opt/chatcluster /opt/chatcluster
ENV PATH=/opt/chatcluster/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# The embedded backends' state directory (./chatcluster-state) lands here; on Kubernetes the
# pods mount an emptyDir or use the production backends, and the root filesystem is read-only.
WORKDIR /var/lib/chatcluster
USER 10001:10001
EXPOSE 8080
# Each process has its own probes (HTTP /healthz and /readyz for the services, kopf's liveness
# endpoint for the operator) and Kubernetes sets them per container; one image-wide check would
# be wrong for three of the four entry points.
HEALTHCHECK NONE
ENTRYPOINT ["chatcluster"]
CMD ["--help"]
