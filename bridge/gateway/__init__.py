"""The datacenter's one MCP endpoint: every healthy MCP server in Consul behind one URL."""
