"""HTTP/2 against a real server: Hypercorn over TLS offering h2 by ALPN, on loopback.

Many calls at once share one connection (multiplexed streams) on both transport paths and
in both eras. The certificate is self-signed, made here; the client trusts it through
``SSL_CERT_FILE``, as httpx does.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import anyio
import httpx
import pytest

from examples._launch import POLL_INTERVAL, LaunchError, ServerProcess
from mcp_resilient import ResilientClient

pytestmark = pytest.mark.anyio

CALLS = 40


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, and its key (PEM files)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class TLSServer(ServerProcess):
    """``tests.http2.h2_server`` in its own process: HTTPS, h2 offered by ALPN."""

    def __init__(self, cert: Path, key: Path) -> None:
        super().__init__(
            instance="h2",
            module="tests.http2.h2_server",
            extra_args=["--certfile", str(cert), "--keyfile", str(key)],
        )
        self.trust = ssl.create_default_context(cafile=str(cert))

    @property
    def base_url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def wait_healthy(self, timeout: float = 60.0) -> dict[str, Any]:
        proc = self._proc
        assert proc is not None
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=1.0, verify=self.trust, trust_env=False) as client:
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise LaunchError(
                        f"h2 server exited with {proc.returncode}:\n{self.log_tail()}"
                    )
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    body = client.get(self.health_url).json()
                    if body.get("pid") == proc.pid:
                        return dict(body)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=POLL_INTERVAL)
        self.kill()
        raise LaunchError(f"h2 server not healthy after {timeout} s:\n{self.log_tail()}")

    def stats(self) -> dict[str, Any]:
        with httpx.Client(timeout=5.0, verify=self.trust, trust_env=False) as client:
            return dict(client.get(f"{self.base_url}/stats").json())

    def __enter__(self) -> Self:
        return self


@pytest.fixture
def h2_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TLSServer]:
    cert, key = make_certificate(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # what the client trusts, as with httpx
    with TLSServer(cert, key) as server:
        server.start_healthy()
        yield server


@pytest.mark.parametrize(
    ("path", "version"), [("lean", "auto"), ("lean", "2025-11-25"), ("httpx", "auto")]
)
async def test_many_calls_share_one_http2_connection(
    h2_server: TLSServer, monkeypatch: pytest.MonkeyPatch, path: str, version: str
) -> None:
    monkeypatch.setenv("MCP_RESILIENT_HTTP_PATH", path)
    answers: list[int] = []

    async def gather(client: ResilientClient) -> None:
        result = await client.call_tool("gather", {"n": CALLS}, timeout=60)
        answers.append(int(result.structured_content["result"]))  # type: ignore[index]

    with anyio.fail_after(90):
        async with ResilientClient(h2_server.url, protocol_version=version) as client:
            assert client.protocol_version is not None
            async with anyio.create_task_group() as tg:
                for _ in range(CALLS):
                    tg.start_soon(gather, client)
    stats = h2_server.stats()
    assert len(answers) == CALLS
    assert stats["most"] >= CALLS, stats  # all of them at the server at once
    assert set(stats["versions"]) == {"2"}, stats  # every MCP request over HTTP/2
    # Multiplexed: the server's 100 streams per connection hold all the calls (a listen
    # stream and a probe may add a connection, never one per call).
    assert stats["connections"] <= 3, stats
