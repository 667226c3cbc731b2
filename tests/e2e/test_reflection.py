"""Server reflection as tools nobody on the project wrote speak it: grpc.reflection.v1 and v1alpha,
over a raw channel, with the real grpcurl and with the real `buf curl` (from node_modules)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2
from requires import require

BUF = Path(__file__).resolve().parents[2] / "node_modules" / ".bin" / "buf"
GRPCURL = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")
PROTOCOLS = {"grpc-v1": "grpc.reflection.v1", "grpc-v1alpha": "grpc.reflection.v1alpha"}


def grpcurl(target: str, *args: str, data: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [GRPCURL, "-plaintext", "-max-time", "20", *(["-d", json.dumps(data)] if data is not None else [])]
    return subprocess.run([*cmd, target, *args], capture_output=True, text=True, timeout=30)


def reflect(target: str, package: str, request: reflection_pb2.ServerReflectionRequest) -> Any:
    """One request on `package`'s ServerReflectionInfo; the v1 messages are the v1alpha bytes."""
    with grpc.insecure_channel(target) as channel:
        info = channel.stream_stream(
            f"/{package}.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        (response,) = list(info(iter([request]), timeout=20))
        return response


def files(response: Any) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    protos = (
        descriptor_pb2.FileDescriptorProto.FromString(b)
        for b in response.file_descriptor_response.file_descriptor_proto
    )
    return {proto.name: proto for proto in protos}


@pytest.mark.parametrize("package", PROTOCOLS.values())
def test_both_reflection_protocols_list_services_and_serve_commented_files(server: Any, package: str) -> None:
    listed = reflect(server.target, package, reflection_pb2.ServerReflectionRequest(list_services=""))
    names = {s.name for s in listed.list_services_response.service}
    assert {
        "xcron.v1.JobService",
        "grpc.health.v1.Health",
        *(f"{p}.ServerReflection" for p in PROTOCOLS.values()),
    } <= names
    found = files(
        reflect(
            server.target, package, reflection_pb2.ServerReflectionRequest(file_containing_symbol="xcron.v1.JobService")
        )
    )
    service_file = found["xcron/v1/job_service.proto"]
    comments = [loc.leading_comments for loc in service_file.source_code_info.location]
    assert any("Starts a job now." in c for c in comments)  # the proto's comments travel with reflection
    v1 = files(
        reflect(
            server.target,
            package,
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="grpc.reflection.v1.ServerReflection"),
        )
    )
    (v1_file,) = (f for f in v1.values() if f.package == "grpc.reflection.v1")
    method = v1_file.service[0].method[0]
    assert (method.input_type, method.output_type) == (
        ".grpc.reflection.v1.ServerReflectionRequest",
        ".grpc.reflection.v1.ServerReflectionResponse",
    )


@pytest.mark.parametrize("symbol", ["google.rpc.ErrorInfo", "google.rpc.BadRequest", "google.rpc.Status"])
def test_error_detail_types_are_served(server: Any, symbol: str) -> None:
    for package in PROTOCOLS.values():
        found = files(
            reflect(server.target, package, reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol))
        )
        assert any(
            f.package == "google.rpc" and symbol.rsplit(".", 1)[1] in {m.name for m in f.message_type}
            for f in found.values()
        )


def test_grpcurl_lists_both_protocols_and_prints_error_details_as_json(server: Any) -> None:
    services = grpcurl(server.target, "list").stdout.split()
    assert {"grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"} <= set(services)
    assert "message ErrorInfo" in grpcurl(server.target, "describe", "google.rpc.ErrorInfo").stdout
    bad = {"job_id": "example.greet", "parameters": {"times": {"string_value": "x"}}}
    failed = grpcurl(server.target, "xcron.v1.JobService/RunJob", data=bad)
    assert failed.returncode != 0 and "Code: InvalidArgument" in failed.stderr
    details = [json.loads(line.split("\t", 1)[1]) for line in failed.stderr.splitlines() if "\t{" in line]
    by_type = {d["@type"].rsplit("/", 1)[1]: d for d in details}
    assert by_type["google.rpc.ErrorInfo"]["reason"] == "INVALID_ARGUMENT"  # decoded, not "@value" base64
    assert by_type["google.rpc.BadRequest"]["field_violations"][0]["field"].startswith("parameters.")
    assert not any("@error" in d for d in details)


def buf_curl(server: Any, protocol: str, *args: str) -> subprocess.CompletedProcess[str]:
    require(BUF.exists(), "buf (npm install, as `make setup` does)")
    cmd = [str(BUF), "curl", "--protocol", "grpc", "--http2-prior-knowledge", "--reflect-protocol", protocol]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_buf_curl_finds_job_service_with_either_protocol(server: Any, protocol: str) -> None:
    base = f"http://{server.target}"
    listed = buf_curl(server, protocol, "--list-methods", base)
    assert listed.returncode == 0, listed.stderr
    assert "xcron.v1.JobService/WatchJobs" in listed.stdout.split()
    got = buf_curl(
        server, protocol, "-d", json.dumps({"job_id": "example.greet"}), f"{base}/xcron.v1.JobService/GetJob"
    )
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["job"]["id"] == "example.greet"
    missing = buf_curl(server, protocol, "-d", json.dumps({"job_id": "nope"}), f"{base}/xcron.v1.JobService/GetJob")
    error = json.loads(missing.stderr)
    assert error["code"] == "not_found" and [d["type"] for d in error["details"]] == ["google.rpc.ErrorInfo"]
