"""Refused calls are counted per peer with a bound on the addresses, whichever transport refused them."""

from __future__ import annotations

from xcron.server.api.auth import MAX_PEERS, AuthFailures


def test_addresses_beyond_the_bound_count_as_other() -> None:
    counted: list[tuple[str, str]] = []
    failures = AuthFailures(lambda address, reason: counted.append((address, reason)))
    for i in range(MAX_PEERS + 3):
        failures.record(f"10.0.{i // 256}.{i % 256}", "invalid_token", "/m", f"ipv4:x:{i}", "bad token")
    failures.record("10.0.0.0", "missing_token", "/m", "http:10.0.0.0:1", "no token")  # already known: kept
    assert counted[MAX_PEERS - 1] == (f"10.0.{(MAX_PEERS - 1) // 256}.{(MAX_PEERS - 1) % 256}", "invalid_token")
    assert counted[MAX_PEERS : MAX_PEERS + 3] == [("other", "invalid_token")] * 3
    assert counted[-1] == ("10.0.0.0", "missing_token")
    assert len({address for address, _ in counted}) == MAX_PEERS + 1
