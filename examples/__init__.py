"""Example servers and the demo for mcp-resilient (not part of the installed package)."""
