"""Bad-token floods (issue 12, item 11): token checks are keyed hashes that cost microseconds, so a flood
of unknown tokens never makes a valid one wait; old scrypt lines still work; refused calls are counted per
peer and logged at most once per interval."""

from __future__ import annotations

import asyncio
import re
import secrets
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from xcron.server.api import tokens
from xcron.server.api.auth import Role, hash_token, parse_token_lines, peer_address, scrypt_hash_token
from xcron.v1 import job_service_pb2 as pb
from xcron.v1 import job_service_pb2_grpc as pb_grpc

VALID = "valid-token-" + "a" * 32
OLD = "old-scrypt-token-" + "b" * 32


def test_new_lines_are_keyed_hashes_and_unknown_tokens_never_run_scrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    table = parse_token_lines([f"ci read,run {hash_token(VALID)}", f"ops admin {hash_token('x' * 40)}"])

    def no_scrypt(*args: object) -> bytes:
        raise AssertionError("scrypt ran for an HMAC tokens file")

    monkeypatch.setattr(tokens, "_scrypt", no_scrypt)
    assert hash_token(VALID).startswith("hmac-sha256$")
    for _ in range(100):
        assert table.verify(secrets.token_urlsafe(32)) is None
    principal = table.verify(VALID)
    assert principal is not None and principal.roles == {Role.READ, Role.RUN}
    assert table.legacy_names == []


def test_old_scrypt_lines_are_still_accepted_next_to_new_ones() -> None:
    table = parse_token_lines([f"old read {scrypt_hash_token(OLD)}", f"new admin {hash_token(VALID)}"])
    assert table.legacy_names == ["old"]
    old, new = table.verify(OLD), table.verify(VALID)
    assert old is not None and old.name == "old"
    assert new is not None and new.name == "new"
    assert table.verify("unknown-token-" + "c" * 32) is None


def test_peer_addresses_drop_the_port() -> None:
    assert peer_address("ipv4:10.0.0.7:5123") == "10.0.0.7"
    assert peer_address("ipv6:[::1]:5123") == "::1"
    assert peer_address("unix:/tmp/x.sock") == "unix"


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_a_flood_of_bad_tokens_is_counted_per_peer_and_logged_once(server_factory: Any, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.txt"
    tokens.write_text(f"ci read {hash_token(VALID)}\n")
    server = server_factory(extra_args=["--tokens-file", str(tokens), "--metrics-listen", "127.0.0.1:0"]).start()
    port = re.search(r"metrics on http://[\d.]+:(\d+)/metrics", server.wait_for_log("metrics on http"))
    assert port is not None
    async with grpc.aio.insecure_channel(server.target) as channel:
        stub = pb_grpc.JobServiceStub(channel)

        async def call(token: str) -> grpc.StatusCode:
            try:
                await stub.ListJobs(pb.ListJobsRequest(), metadata=[("authorization", f"Bearer {token}")], timeout=30)
            except grpc.aio.AioRpcError as exc:
                return exc.code()
            return grpc.StatusCode.OK

        flood = [asyncio.create_task(call(secrets.token_urlsafe(32))) for _ in range(100)]
        assert await call(VALID) is grpc.StatusCode.OK  # first use of the valid token, during the flood
        assert set(await asyncio.gather(*flood)) == {grpc.StatusCode.UNAUTHENTICATED}
    metrics = _scrape(f"http://127.0.0.1:{port.group(1)}/metrics")
    assert metrics[("xcron_auth_failures_total", (("peer", "127.0.0.1"), ("reason", "invalid_token")))] == 100
    assert server.stop() == 0
    refused = [line for line in server.log().splitlines() if "refused /xcron.v1.JobService/ListJobs" in line]
    assert len(refused) == 1, refused
