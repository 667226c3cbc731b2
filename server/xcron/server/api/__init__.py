"""The gRPC API layer: proto <-> domain at the edge, domain errors -> status codes."""
