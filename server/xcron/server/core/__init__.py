"""The core of xcron: jobs, executor, event bus, scheduler. Nothing here imports grpc."""
