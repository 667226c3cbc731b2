"""xcron client."""
