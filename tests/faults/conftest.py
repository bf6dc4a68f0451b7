"""The fault suite reuses the integration world: real dockerd, real Consul, real agents."""

from tests.integration.conftest import (  # noqa: F401  (fixtures are found by name)
    bridge,
    docker_client,
    mcp_server_image,
    mcp_server_npm_image,
    mcp_server_time_image,
    mcp_server_v1_image,
    pytest_collection_modifyitems,
    services,
)
