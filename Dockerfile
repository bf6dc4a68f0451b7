# mcp-bridge: the agent as a container image.
#
#   docker build -t mcp-bridge:latest .
#   docker run -d --name mcp-bridge \
#       -v /var/run/docker.sock:/var/run/docker.sock:ro \
#       --group-add "$(stat -c %g /var/run/docker.sock)" \
#       -v mcp-bridge-state:/var/lib/mcp-bridge \
#       -e BRIDGE_CONSUL_URL=http://consul.example:8500 \
#       --network host mcp-bridge:latest
#
# Build arguments:
#   BASE_IMAGE   any Debian-like image with python3 >= 3.11 and its venv module
#                (default python:3.13-slim; scripts/build-local-images.sh uses its
#                registry-free mcp-bridge/python:local, Debian bookworm's python3)
#   BRIDGE_UID   uid/gid of the `bridge` user the agent runs as (default 10001)
#
# Offline builds: when the build context has *.whl files in wheels/, pip installs from
# them only (--no-index --find-links wheels/): the project's dependencies plus setuptools
# (its build backend), for the base image's CPython. scripts/build-local-images.sh fetches
# them with `pip download` on the host, because a build container may not be able to use
# PyPI (on the project's CI machine it reaches it, but through a TLS-intercepting proxy
# whose CA only the host trusts). Without wheels, pip uses PyPI as usual.
#
# Docker socket: the agent runs as the non-root user `bridge` (uid 10001), and the engine's
# socket is normally root:docker, mode 660. Give the container the socket's group, e.g. in
# compose `group_add: ["${DOCKER_GID:-999}"]` with DOCKER_GID=$(stat -c %g
# /var/run/docker.sock), or `docker run --group-add ...`. Only if that is not possible,
# fall back to `user: root`. (Mounting the socket `:ro` does not make the API read-only:
# whoever can connect to it controls the engine.) With DOCKER_HOST=tcp://... no group is
# needed.
#
# Written for both the classic builder (DOCKER_BUILDKIT=0) and BuildKit; the project's CI
# machine has only the classic one, so that is the one tried.

ARG BASE_IMAGE=python:3.13-slim

FROM ${BASE_IMAGE} AS build
LABEL org.mcp-bridge.stage=build
WORKDIR /src
# Only what the package needs (.dockerignore keeps out the rest): the dependency list
# (pyproject.toml), README.md (the package's long description) and the code.
COPY wheels/ /src/wheels/
COPY pyproject.toml README.md /src/
COPY bridge/ /src/bridge/
RUN set -eu; \
    if ls /src/wheels/*.whl >/dev/null 2>&1; then \
        echo "installing offline from $(ls /src/wheels/*.whl | wc -l) wheels in wheels/"; \
        set -- --no-index --find-links /src/wheels; \
    else \
        set --; \
    fi; \
    python3 -m venv /opt/venv; \
    /opt/venv/bin/python -m pip install --no-cache-dir --disable-pip-version-check "$@" /src; \
    /opt/venv/bin/python -m pip uninstall -y --disable-pip-version-check pip setuptools \
        >/dev/null 2>&1 || true; \
    /opt/venv/bin/mcp-bridge --help >/dev/null

FROM ${BASE_IMAGE}
ARG BRIDGE_UID=10001
# A fixed numeric uid/gid: volumes keep their ownership across image versions, and
# Kubernetes' runAsNonRoot can verify it.
RUN set -eu; \
    if command -v useradd >/dev/null 2>&1; then \
        groupadd --gid "${BRIDGE_UID}" bridge; \
        useradd --uid "${BRIDGE_UID}" --gid "${BRIDGE_UID}" --no-create-home \
            --home-dir /var/lib/mcp-bridge --shell /usr/sbin/nologin bridge; \
    else \
        echo "bridge:x:${BRIDGE_UID}:" >>/etc/group; \
        echo "bridge:x:${BRIDGE_UID}:${BRIDGE_UID}::/var/lib/mcp-bridge:/usr/sbin/nologin" >>/etc/passwd; \
    fi; \
    mkdir -p /var/lib/mcp-bridge; \
    chown "${BRIDGE_UID}:${BRIDGE_UID}" /var/lib/mcp-bridge; \
    chmod 0750 /var/lib/mcp-bridge
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# The port pool's store (BRIDGE_STATE_FILE, default /var/lib/mcp-bridge/state.db). Keep it
# on a volume: sticky ports survive re-creating the container. A new named volume takes
# this directory's owner (bridge), so the agent can write to it.
VOLUME ["/var/lib/mcp-bridge"]
USER ${BRIDGE_UID}:${BRIDGE_UID}
# Liveness of the agent's own HTTP endpoint (BRIDGE_HTTP_ADDR, default 127.0.0.1:9105,
# which is inside the container, and so is this check). http.client, not curl: slim images
# have no curl, and it ignores any HTTP(S)_PROXY in the environment. A wildcard listen
# address (0.0.0.0, ::) is reached on loopback.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python3", "-c", "import http.client as h, os, sys; a = os.environ.get('BRIDGE_HTTP_ADDR') or '127.0.0.1:9105'; host, _, port = a.rpartition(':'); host = host.strip('[]'); host = {'0.0.0.0': '127.0.0.1', '': '127.0.0.1', '::': '::1'}.get(host, host); c = h.HTTPConnection(host, int(port), timeout=2); c.request('GET', '/healthz'); sys.exit(c.getresponse().status != 200)"]
LABEL org.opencontainers.image.title="mcp-bridge" \
      org.opencontainers.image.description="Registers MCP-server containers from a Docker engine as Consul services, with sticky host ports from a persisted pool" \
      org.opencontainers.image.licenses="MIT"
ENTRYPOINT ["mcp-bridge"]
CMD ["run"]
