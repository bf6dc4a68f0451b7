"""Speaking MCP to the servers: the wire (JSON-RPC over HTTP, both eras), the health probe,
tool inventories, and the TTL checks the bridge reports."""
