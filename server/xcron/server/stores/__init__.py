"""Persistence: the SanteDB-compatible schedule file and xcron's own state, with no grpc or asyncio."""
