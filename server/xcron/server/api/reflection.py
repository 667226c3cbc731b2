"""Server reflection, both protocols, with the proto's comments and the error detail types.

- `grpc.reflection.v1` and `grpc.reflection.v1alpha` are both served. grpcio-reflection ships only
  v1alpha; the v1 messages are wire-identical (same fields, same numbers, only the package differs),
  so the v1 service is the same servicer registered under the v1 name. Its descriptor is the
  v1alpha file with the package renamed, so `list` and `describe` show it like any other service.
  Tools that speak v1 (`buf curl --reflect-protocol grpc-v1`, grpcurl 1.8.8 and later, Postman,
  grpcui) try it first; older ones use v1alpha.
- Descriptors in a pool lose their source info (comments) when grpc's reflection serializes them,
  so xcron's own files are swapped for those in `xcron/v1/descriptor_set.binpb`, which `make proto`
  writes with the source info kept, and `grpcurl describe` shows the comments.
- The `google.rpc` files (`status.proto`, `error_details.proto`) are in the pool, so a client that
  resolves an error's details by reflection (grpcurl) prints `ErrorInfo` and `BadRequest` as JSON.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from importlib import resources
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from google.rpc import error_details_pb2, status_pb2
from grpc_reflection.v1alpha import reflection, reflection_pb2
from grpc_reflection.v1alpha._async import ReflectionServicer

from xcron.server.api.wrapping import HandlerRegistry

V1ALPHA_SERVICE = reflection.SERVICE_NAME  # grpc.reflection.v1alpha.ServerReflection
V1_PACKAGE = "grpc.reflection.v1"
V1_SERVICE = f"{V1_PACKAGE}.ServerReflection"
V1_FILE = "grpc/reflection/v1/reflection.proto"
ERROR_DETAIL_FILES = (status_pb2.DESCRIPTOR.name, error_details_pb2.DESCRIPTOR.name)


def _files_with_comments() -> dict[str, bytes]:
    data = resources.files("xcron.v1").joinpath("descriptor_set.binpb").read_bytes()
    return {file.name: file.SerializeToString() for file in descriptor_pb2.FileDescriptorSet.FromString(data).file}


def _add_v1_descriptor(pool: Any) -> None:
    """Adds grpc/reflection/v1/reflection.proto to `pool`: the v1alpha file under the v1 package."""
    try:
        pool.FindFileByName(V1_FILE)
        return  # a newer grpcio-reflection (or anything else) brought it already
    except KeyError:
        pass
    file = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(file)
    old, new = f".{file.package}.", f".{V1_PACKAGE}."
    file.name, file.package = V1_FILE, V1_PACKAGE
    file.options.Clear()
    for message in file.message_type:
        for field in message.field:
            if field.type_name.startswith(old):
                field.type_name = new + field.type_name.removeprefix(old)
    for service in file.service:
        for method in service.method:
            method.input_type = new + method.input_type.removeprefix(old)
            method.output_type = new + method.output_type.removeprefix(old)
    pool.Add(file)


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


def enable(server: HandlerRegistry, service_names: tuple[str, ...]) -> None:
    _add_v1_descriptor(descriptor_pool.Default())
    servicer = _CommentedReflection((*service_names, V1_SERVICE, V1ALPHA_SERVICE))
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,  # v1 bytes are the same
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        tuple(
            grpc.method_handlers_generic_handler(name, {"ServerReflectionInfo": handler})
            for name in (V1_SERVICE, V1ALPHA_SERVICE)
        )
    )
