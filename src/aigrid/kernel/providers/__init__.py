"""Tool providers: MCP servers and OpenAPI services whose operations become kernel tools."""
