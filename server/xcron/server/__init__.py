"""xcron server."""
