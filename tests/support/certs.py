"""Throwaway certificates for TLS tests, made with the `openssl` command (no Python crypto dependency).

P-256 keys keep generation fast. Certificates are valid for a day and never leave the test's tmp_path.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

OPENSSL = shutil.which("openssl")


@dataclass(frozen=True)
class KeyPair:
    cert: Path
    key: Path

    def cert_bytes(self) -> bytes:
        return self.cert.read_bytes()

    def key_bytes(self) -> bytes:
        return self.key.read_bytes()


@dataclass(frozen=True)
class Pki:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate, all from that CA."""

    ca: KeyPair
    server: KeyPair
    client: KeyPair


def _openssl(*args: str, cwd: Path) -> None:
    if OPENSSL is None:
        raise RuntimeError("the openssl command is needed to make test certificates")
    result = subprocess.run([OPENSSL, *args], cwd=cwd, capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {result.stderr}")


def _new_key_args(key: Path) -> list[str]:
    return ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key)]


def make_ca(folder: Path, name: str = "ca") -> KeyPair:
    """A self-signed CA in ``folder/name.pem`` and ``folder/name.key``."""
    folder.mkdir(parents=True, exist_ok=True)
    pair = KeyPair(folder / f"{name}.pem", folder / f"{name}.key")
    _openssl(
        "req", "-x509", "-new", *_new_key_args(pair.key), "-out", str(pair.cert), "-days", "1",
        "-subj", f"/CN=xcron test {name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=folder,
    )  # fmt: skip
    return pair


def issue(ca: KeyPair, folder: Path, name: str, *, server: bool) -> KeyPair:
    """A leaf certificate signed by ``ca``: for 127.0.0.1/::1/localhost if ``server``, else for a client."""
    pair = KeyPair(folder / f"{name}.pem", folder / f"{name}.key")
    csr = folder / f"{name}.csr"
    ext = folder / f"{name}.ext"
    usage = "serverAuth" if server else "clientAuth"
    lines = ["basicConstraints=CA:FALSE", "keyUsage=critical,digitalSignature", f"extendedKeyUsage={usage}"]
    if server:
        lines.append("subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost")
    ext.write_text("\n".join(lines) + "\n")
    _openssl("req", "-new", *_new_key_args(pair.key), "-out", str(csr), "-subj", f"/CN={name}", cwd=folder)
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key), "-CAcreateserial",
        "-out", str(pair.cert), "-days", "1", "-sha256", "-extfile", str(ext),
        cwd=folder,
    )  # fmt: skip
    return pair


def make_pki(folder: Path) -> Pki:
    """A fresh CA with one server and one client certificate under ``folder``."""
    ca = make_ca(folder)
    return Pki(ca=ca, server=issue(ca, folder, "server", server=True), client=issue(ca, folder, "client", server=False))
