"""Tools from MCP servers: registered servers, their listed tools, and the pool of client sessions."""
