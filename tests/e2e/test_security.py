"""Access control against real server processes: TLS, mutual TLS, the loopback rule, bearer tokens and
roles, and what stays open (health, reflection by default)."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from certs import Pki, issue, make_ca, make_pki
from grpc_health.v1 import health_pb2, health_pb2_grpc

from xcron.client import Client, PermissionDeniedError, UnauthenticatedError, XcronError
from xcron.client import UnavailableError as ClientUnavailableError
from xcron.server.api.auth import ANY_ROLE_METHODS, METHOD_ROLES, Role, hash_token, parse_token_lines
from xcron.v1 import job_service_pb2

GRPCURL = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")
SERVICE = job_service_pb2.DESCRIPTOR.services_by_name["JobService"]
ROLES = (Role.READ, Role.RUN, Role.SCHEDULE, Role.ADMIN)
TOKENS = {role: f"test-{role.value}-token-0123456789abcdef" for role in ROLES}

ServerFactory = Callable[..., Any]

# One call per JobService RPC, and the role it needs. A permitted call may still fail for a domain reason
# (nothing to cancel, unknown execution): only PERMISSION_DENIED / UNAUTHENTICATED mean "refused".
CALLS: dict[str, tuple[Role, Callable[[Client], object]]] = {
    "ListJobs": (Role.READ, lambda c: c.list_jobs()),
    "GetJob": (Role.READ, lambda c: c.get_job("example.greet")),
    "WatchJobs": (Role.READ, lambda c: _first_watch_event(c)),
    "ListExecutions": (Role.READ, lambda c: c.list_executions("example.greet")),
    "GetExecution": (Role.READ, lambda c: c.get_execution("no-such-execution")),
    "RunJob": (Role.RUN, lambda c: c.run_job("example.greet", {"name": "auth", "times": 1})),
    "CancelJob": (Role.RUN, lambda c: c.cancel_job("test.block")),
    "SetSchedule": (Role.SCHEDULE, lambda c: c.set_schedule("example.greet", [])),
    "PauseSchedule": (Role.SCHEDULE, lambda c: c.pause_schedule("example.greet")),
    "ResumeSchedule": (Role.SCHEDULE, lambda c: c.resume_schedule("example.greet")),
    "ReloadSchedules": (Role.SCHEDULE, lambda c: c.reload_schedules()),
}


def _first_watch_event(client: Client) -> object:
    with contextlib.closing(client.watch_jobs(["example.greet"])) as events:
        return next(events)


def _call_outcome(client: Client, method: str) -> str:
    """``"ok"`` when the server let the call through, else the refusing status code's name."""
    try:
        CALLS[method][1](client)
    except (PermissionDeniedError, UnauthenticatedError) as exc:
        assert exc.domain == "xcron.dev"
        assert exc.reason == exc.code.name, exc
        return str(exc.code.name)
    except XcronError as exc:
        # Let through: the job manager answered (e.g. FAILED_PRECONDITION: nothing to cancel).
        assert exc.code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNIMPLEMENTED), exc
    return "ok"


def _tokens_file(folder: Path) -> Path:
    path = folder / "tokens.txt"
    lines = [
        "# NAME ROLE[,ROLE...] HASH",
        *(f"{role.value}-user {role.value} {hash_token(TOKENS[role])}" for role in ROLES),
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _grpcurl(target: str, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [GRPCURL, "-plaintext", "-max-time", "20"]
    if token is not None:
        cmd += ["-H", f"authorization: Bearer {token}"]
    return subprocess.run([*cmd, target, *args], capture_output=True, text=True, timeout=30)


def _server_command(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "xcron.server", "--schedule-file", str(tmp_path / "x.xml")]
    command += ["--data-dir", str(tmp_path / "data"), "--no-entry-points", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=30, cwd=tmp_path)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def tokens_server(server_factory: ServerFactory, tmp_path: Path) -> Any:
    return server_factory(extra_args=["--tokens-file", str(_tokens_file(tmp_path))]).start()


# --- the role table itself ----------------------------------------------------------------------------------


def test_every_rpc_has_a_role_and_a_test_call() -> None:
    methods = {f"/{SERVICE.full_name}/{m.name}" for m in SERVICE.methods}
    # GetCaller is the one RPC any valid token may call (it tells the caller its own roles).
    assert {f"/{SERVICE.full_name}/GetCaller"} == ANY_ROLE_METHODS
    assert set(METHOD_ROLES) == methods - ANY_ROLE_METHODS
    assert {f"/{SERVICE.full_name}/{name}": role for name, (role, _) in CALLS.items()} == METHOD_ROLES


def test_tokens_file_errors_name_the_line() -> None:
    good = hash_token("x" * 20)
    for text, message in [
        (f"a read {good}\na read {good}", ":2: duplicate name 'a'"),
        (f"a reader {good}", ":1: unknown role 'reader'"),
        ("a read sha256$00ff", ":1: HASH must be hmac-sha256$"),
        (f"a read {good} extra", ":1: expected NAME ROLE[,ROLE...] HASH"),
        ("# only a comment", "no tokens"),
    ]:
        with pytest.raises(ValueError, match=message.replace("$", r"\$").replace("[", r"\[")):
            parse_token_lines(text.splitlines(), "t")


# --- transport ----------------------------------------------------------------------------------------------


def test_tls_server_needs_a_tls_client(server_factory: ServerFactory, pki: Pki) -> None:
    # TLS lets the server listen on every interface without --allow-insecure.
    server = server_factory(
        extra_args=["--listen", "0.0.0.0:0", "--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key)]
    ).start()
    credentials = grpc.ssl_channel_credentials(pki.ca.cert_bytes())
    with Client(server.target, credentials=credentials, timeout=10) as client:
        assert any(job.id == "example.greet" for job in client.list_jobs().items)
    with Client(server.target, timeout=3) as plaintext, pytest.raises(ClientUnavailableError):
        plaintext.list_jobs()
    with Client(f"localhost:{server.port}", credentials=credentials, timeout=10) as by_name:
        by_name.get_job("example.greet")


def test_mutual_tls_requires_a_client_certificate_from_the_ca(
    server_factory: ServerFactory, pki: Pki, tmp_path: Path
) -> None:
    server = server_factory(
        extra_args=[
            "--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key),
            "--tls-client-ca", str(pki.ca.cert),
        ]
    ).start()  # fmt: skip
    ca = pki.ca.cert_bytes()
    rogue_ca = make_ca(tmp_path / "rogue", "rogue-ca")
    rogue = issue(rogue_ca, tmp_path / "rogue", "rogue-client", server=False)
    refused = [
        grpc.ssl_channel_credentials(ca),  # no client certificate
        grpc.ssl_channel_credentials(ca, rogue.key_bytes(), rogue.cert_bytes()),  # signed by another CA
    ]
    for credentials in refused:
        with Client(server.target, credentials=credentials, timeout=5) as client, pytest.raises(XcronError) as info:
            client.list_jobs()
        assert info.value.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN), info.value
    good = grpc.ssl_channel_credentials(ca, pki.client.key_bytes(), pki.client.cert_bytes())
    with Client(server.target, credentials=good, timeout=10) as client:
        assert client.get_job("example.greet").id == "example.greet"


def test_plaintext_off_loopback_refused_unless_allowed(server_factory: ServerFactory, tmp_path: Path) -> None:
    for listen in ("0.0.0.0:0", "[::]:0", ":0"):
        refused = _server_command(tmp_path, "--listen", listen)
        assert refused.returncode == 2, refused
        assert "refusing to serve plaintext" in refused.stderr and "--allow-insecure" in refused.stderr
        assert not (tmp_path / "data").exists()  # refused before anything was opened
    server = server_factory(extra_args=["--listen", "0.0.0.0:0", "--allow-insecure"]).start()
    with Client(server.target, timeout=10) as client:
        client.get_job("example.greet")


def test_bad_security_flags_refuse_to_start(tmp_path: Path, pki: Pki) -> None:
    (tmp_path / "bad-tokens.txt").write_text("ops admin scrypt$zz$zz\n")
    cases: list[tuple[list[str], str]] = [
        (["--tls-cert", str(pki.server.cert)], "--tls-cert and --tls-key go together"),
        (["--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.cert)], "no PEM private key"),
        (["--tls-cert", str(pki.server.cert), "--tls-key", str(tmp_path / "missing.key")], "missing.key"),
        (["--tls-cert", str(pki.server.cert), "--tls-key", str(pki.client.key)], "key does not belong"),
        (["--tls-client-ca", str(pki.ca.cert)], "needs --tls-cert"),
        (["--tokens-file", str(tmp_path / "bad-tokens.txt")], "bad-tokens.txt:1: HASH salt and key"),
        (["--reflection-requires-token"], "needs --tokens-file"),
    ]
    for args, message in cases:
        result = _server_command(tmp_path, *args)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)


# --- tokens and roles ---------------------------------------------------------------------------------------


def test_each_role_calls_exactly_its_rpcs(tokens_server: Any) -> None:
    for role in ROLES:
        with Client(tokens_server.target, token=TOKENS[role], timeout=10) as client:
            outcomes = {method: _call_outcome(client, method) for method in CALLS}
        expected = {
            method: "ok" if role in (Role.ADMIN, needed) else "PERMISSION_DENIED"
            for method, (needed, _) in CALLS.items()
        }
        assert outcomes == expected, role


def test_permission_denied_names_the_role(tokens_server: Any) -> None:
    client = Client(tokens_server.target, token=TOKENS[Role.READ], timeout=10)
    with client, pytest.raises(PermissionDeniedError) as info:
        client.run_job("example.greet", {"name": "x"})
    assert info.value.reason == "PERMISSION_DENIED"
    assert info.value.metadata["required_role"] == "run"
    assert "'run' role" in info.value.message and "read-user" in info.value.message


def test_missing_or_wrong_token_is_unauthenticated(tokens_server: Any) -> None:
    for token in (None, "not-a-valid-token-0123456789", TOKENS[Role.READ] + "x", "short"):
        with Client(tokens_server.target, token=token, timeout=10) as client:
            assert {method: _call_outcome(client, method) for method in CALLS} == dict.fromkeys(
                CALLS, "UNAUTHENTICATED"
            ), token
    basic = Client(tokens_server.target, metadata=[("authorization", "Basic dXNlcjpwYXNz")], timeout=10)
    with basic, pytest.raises(UnauthenticatedError, match="Bearer"):
        basic.list_jobs()
    tokens_file = (tokens_server.workdir / "tokens.txt").read_text()
    assert not any(token in tokens_file for token in TOKENS.values())  # the file holds hashes only


def test_health_is_open_without_a_token(tokens_server: Any) -> None:
    with grpc.insecure_channel(tokens_server.target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "xcron.v1.JobService"):
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_open_by_default(tokens_server: Any) -> None:
    listed = _grpcurl(tokens_server.target, "list")
    assert listed.returncode == 0, listed.stderr
    assert "xcron.v1.JobService" in listed.stdout.split()
    # grpcurl with a token calls through too; without one the RPC itself is refused
    ok = _grpcurl(tokens_server.target, "xcron.v1.JobService/ListJobs", token=TOKENS[Role.READ])
    assert ok.returncode == 0 and "example.greet" in ok.stdout, ok.stderr
    refused = _grpcurl(tokens_server.target, "xcron.v1.JobService/ListJobs")
    assert refused.returncode != 0 and "Unauthenticated" in refused.stderr


def test_reflection_can_require_a_token(server_factory: ServerFactory, tmp_path: Path) -> None:
    server = server_factory(
        extra_args=["--tokens-file", str(_tokens_file(tmp_path)), "--reflection-requires-token"]
    ).start()
    refused = _grpcurl(server.target, "list")
    assert refused.returncode != 0 and "Unauthenticated" in refused.stderr, refused
    wrong = _grpcurl(server.target, "list", token="wrong-token-0123456789abcdef")
    assert wrong.returncode != 0 and "Unauthenticated" in wrong.stderr, wrong
    # any valid token will do, whatever its roles
    listed = _grpcurl(server.target, "list", token=TOKENS[Role.SCHEDULE])
    assert listed.returncode == 0 and "xcron.v1.JobService" in listed.stdout.split(), listed.stderr


def test_token_cli_makes_lines_without_the_token(tmp_path: Path) -> None:
    made = subprocess.run(
        [sys.executable, "-m", "xcron.server.api.auth", "new", "ci", "read,run"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    token = made.stderr.strip()
    table = parse_token_lines(made.stdout.splitlines())
    assert token not in made.stdout and table.names == ["ci"]
    principal = table.verify(token)
    assert principal is not None and principal.roles == {Role.READ, Role.RUN}
    hashed = subprocess.run(
        [sys.executable, "-m", "xcron.server", "--hash-token"],
        input=token + "\n",
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.strip()
    assert hashed.startswith("hmac-sha256$") and token not in hashed
    assert parse_token_lines([f"ci admin {hashed}"]).verify(token) is not None
