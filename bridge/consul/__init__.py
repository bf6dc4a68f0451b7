"""The Consul adapter: the agent API client and its HTTP layer, applying a plan, the
bridge's session, the node id claim, and the datacenter's catalog of MCP services."""
