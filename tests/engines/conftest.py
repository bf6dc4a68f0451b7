"""The engine suites reuse the integration world: the host's dockerd builds and holds the
images, the real Consul, real agents."""

from tests.integration.conftest import (  # noqa: F401  (fixtures are found by name)
    docker_client,
    mcp_server_image,
    pytest_collection_modifyitems,
    services,
)
