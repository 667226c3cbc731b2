"""Server reflection that carries the proto's comments, so `grpcurl describe` shows them.

Descriptors in a pool lose their source info (comments) when grpc's reflection serializes them,
so this servicer swaps in xcron's own files from `xcron/v1/descriptor_set.binpb`, which
`make proto` writes with the source info kept. Everything else is grpc's reflection as is.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from importlib import resources
from typing import Any

import grpc
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha._async import ReflectionServicer


def _files_with_comments() -> dict[str, bytes]:
    data = resources.files("xcron.v1").joinpath("descriptor_set.binpb").read_bytes()
    return {file.name: file.SerializeToString() for file in descriptor_pb2.FileDescriptorSet.FromString(data).file}


class _CommentedReflection(ReflectionServicer):  # type: ignore[misc]
    def __init__(self, service_names: tuple[str, ...]) -> None:
        super().__init__(service_names)
        self._commented = _files_with_comments()

    async def ServerReflectionInfo(
        self, request_iterator: AsyncIterable[reflection_pb2.ServerReflectionRequest], context: Any
    ) -> AsyncIterator[reflection_pb2.ServerReflectionResponse]:
        async for response in super().ServerReflectionInfo(request_iterator, context):
            if response.HasField("file_descriptor_response"):
                files = response.file_descriptor_response.file_descriptor_proto
                for i, serialized in enumerate(files):
                    name = descriptor_pb2.FileDescriptorProto.FromString(serialized).name
                    if name in self._commented:
                        files[i] = self._commented[name]
            yield response


def enable(server: grpc.aio.Server, service_names: tuple[str, ...]) -> None:
    servicer = _CommentedReflection((*service_names, reflection.SERVICE_NAME))
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
