"""The hivehost example server: a FastMCP server over stdio with one tool.

Deploy it with `hivehost example-package -o example-server.zip` and an upload; hivehost installs
requirements.txt into the server's own venv and runs `python server.py` there.
"""

from mcp.server.fastmcp import FastMCP

# WARNING keeps FastMCP 1.x from logging a line per request on stderr.
mcp = FastMCP("example-server", log_level="WARNING")


@mcp.tool()
def process(input: str) -> str:
    """Process the input and return it, prefixed with `Processed: `."""
    return f"Processed: {input}"


if __name__ == "__main__":
    mcp.run()
