"""A stdio MCP server served as Streamable HTTP: its framing (lines), and one process
shared by many clients (mux). The attach itself is the Docker adapter's (docker/attach.py)."""
