"""Transport security: TLS / mutual-TLS server credentials and the "no plaintext off loopback" rule.

xcron can run jobs that delete files and copy databases, so it must not be reachable in plaintext from
the network by accident. Plaintext is allowed only on a loopback address (127.0.0.0/8, ::1, ``localhost``)
or a Unix socket; anywhere else the server needs ``--tls-cert``/``--tls-key`` or an explicit
``--allow-insecure`` (e.g. behind a TLS-terminating proxy on a private network).

With ``--tls-client-ca`` the server requires a client certificate signed by that CA (mutual TLS). That
is the authentication to use when no ``--tokens-file`` is given. Certificates are read once at start:
restart the server to rotate them.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

import grpc

__all__ = [
    "InsecureListenError",
    "TlsConfigError",
    "TlsFiles",
    "check_plaintext_allowed",
    "is_loopback_listen",
    "listen_host",
    "read_tls_files",
    "server_credentials",
]


class TlsConfigError(ValueError):
    """A TLS file is missing, unreadable or not PEM of the expected kind."""


class InsecureListenError(ValueError):
    """Plaintext was asked for on an address reachable from other machines."""


@dataclass(frozen=True, kw_only=True)
class TlsFiles:
    """PEM files for the server's TLS; ``client_ca`` set means client certificates are required."""

    cert: Path
    key: Path
    client_ca: Path | None = None


def listen_host(listen: str) -> str:
    """The host part of a gRPC listen address: ``[::1]:50051`` -> ``::1``, ``:50051`` -> ``""``."""
    if listen.startswith(("unix:", "unix-abstract:")):
        return listen
    host = listen.rsplit(":", 1)[0] if ":" in listen else listen
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host


def is_loopback_listen(listen: str) -> bool:
    """True when only this machine can connect: a loopback IP, ``localhost`` or a Unix socket.

    Any other host name counts as reachable: it may resolve to a public address.
    """
    if listen.startswith(("unix:", "unix-abstract:")):
        return True
    host = listen_host(listen).split("%", 1)[0]  # drop an IPv6 zone id
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def check_plaintext_allowed(listen: str, *, allow_insecure: bool) -> None:
    """Raises InsecureListenError unless plaintext on ``listen`` is local-only or explicitly allowed."""
    if allow_insecure or is_loopback_listen(listen):
        return
    raise InsecureListenError(
        f"refusing to serve plaintext on {listen!r}: it is not a loopback address. "
        "Give --tls-cert and --tls-key (and --tls-client-ca for mutual TLS), "
        "or --allow-insecure if the network is trusted (e.g. a TLS-terminating proxy)"
    )


def _read_pem(path: Path, marker: bytes, kind: str, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TlsConfigError(f"{what} {path}: {exc.strerror or exc}") from exc
    if marker not in data:
        raise TlsConfigError(f"{what} {path}: no PEM {kind} in it")
    return data


def read_tls_files(files: TlsFiles) -> tuple[bytes, bytes, bytes | None]:
    """Reads and sanity-checks the PEM files (cert chain, key, client CA), so that a wrong path fails
    with a clear message at start instead of a bare "failed to bind" from gRPC."""
    cert = _read_pem(files.cert, b"-----BEGIN CERTIFICATE-----", "certificate", "--tls-cert")
    key = _read_pem(files.key, b"PRIVATE KEY-----", "private key", "--tls-key")
    ca = (
        _read_pem(files.client_ca, b"-----BEGIN CERTIFICATE-----", "certificate", "--tls-client-ca")
        if files.client_ca
        else None
    )
    return cert, key, ca


def server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    """``grpc.ServerCredentials`` for TLS, or mutual TLS (client certificate required) with a client CA."""
    cert, key, ca = read_tls_files(files)
    return grpc.ssl_server_credentials(
        [(key, cert)],
        root_certificates=ca,
        require_client_auth=ca is not None,
    )
