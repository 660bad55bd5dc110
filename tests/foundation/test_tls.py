"""MQTT over TLS: a service and a client verify the broker's certificate against the configured CA."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from trackerdcs.client import DcsClient, DcsError
from trackerdcs.service import Service
from trackerdcs_devstack.localbroker import LocalBroker


def make_pki(folder: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate for 127.0.0.1 (openssl)."""
    folder.mkdir()
    ca_key, ca, key, csr, cert = (folder / n for n in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem"))
    run = lambda *a: subprocess.run(a, check=True, capture_output=True)  # noqa: E731
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
        "-keyout", str(ca_key), "-out", str(ca))  # fmt: skip
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", str(key),
        "-out", str(csr))  # fmt: skip
    ext = folder / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    run("openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
        "-days", "2", "-extfile", str(ext), "-out", str(cert))  # fmt: skip
    return ca, cert, key


@pytest.fixture
def tls_broker(tmp_path: Path):
    pki = make_pki(tmp_path / "pki")
    broker = LocalBroker(tmp_path / "broker", tmp_path / "secrets", tls=pki)
    broker.start()
    yield broker, pki[0]
    broker.stop()


def test_service_and_operator_talk_over_tls_with_a_verified_broker(tls_broker):
    broker, ca = tls_broker
    svc = Service("caen", broker.settings("caen", tls_ca=str(ca), client_id=f"tls-{uuid.uuid4().hex[:6]}"))
    svc.add_command("ping", lambda args: {"pong": True})
    svc.start()
    try:
        assert svc.wait_connected(10)
        with DcsClient(broker.settings("operator", tls_ca=str(ca))) as op:
            assert op.command("caen", "ping")["result"] == {"pong": True}
    finally:
        svc.stop()


def test_a_client_that_does_not_trust_the_broker_certificate_is_not_connected(tls_broker, tmp_path):
    broker, _ = tls_broker
    other_ca = make_pki(tmp_path / "other")[0]
    with pytest.raises(DcsError):
        DcsClient(broker.settings("operator", tls_ca=str(other_ca)), connect_timeout=3).connect()
