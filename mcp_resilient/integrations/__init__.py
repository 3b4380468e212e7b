"""Adapters that give other MCP doors our failover: FastMCP and agent frameworks.

Each adapter lives in its own module and imports its framework only there, so
``import mcp_resilient`` (and this package) stays light:

- ``mcp_resilient.integrations.fastmcp.ResilientTransport``
- ``mcp_resilient.integrations.pydantic_ai.ResilientToolset``
- ``mcp_resilient.integrations.openai_agents.ResilientMCPServer``
- ``mcp_resilient.integrations.langchain.load_tools``
"""
