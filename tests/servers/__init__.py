"""Small MCP servers the integration tests run in their own processes."""
