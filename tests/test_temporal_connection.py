"""How the Temporal settings become connection options: the same for workers and the web app,
locally (plain) and on a cluster or Temporal Cloud (mTLS or API key)."""

from __future__ import annotations

from temporalio.service import TLSConfig

from orchestration.settings import TemporalSettings
from orchestration.temporal_client import DATA_CONVERTER, connect_options


def test_local_dev_server_needs_neither_tls_nor_key(monkeypatch):
    for name in ("TEMPORAL_TLS_CERT", "TEMPORAL_TLS_KEY", "TEMPORAL_TLS_CA", "TEMPORAL_API_KEY", "TEMPORAL_TLS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TEMPORAL_NAMESPACE", "orders-prod")
    assert connect_options(TemporalSettings()) == {
        "namespace": "orders-prod", "tls": False, "api_key": None, "data_converter": DATA_CONVERTER,
    }


def test_client_certificate_gives_mutual_tls(monkeypatch, tmp_path):
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    cert.write_bytes(b"CERT")
    key.write_bytes(b"KEY")
    monkeypatch.setenv("TEMPORAL_TLS_CERT", str(cert))
    monkeypatch.setenv("TEMPORAL_TLS_KEY", str(key))
    monkeypatch.setenv("TEMPORAL_TLS_SERVER_NAME", "orders.tmprl.cloud")
    tls = connect_options(TemporalSettings())["tls"]
    assert isinstance(tls, TLSConfig)
    assert (tls.client_cert, tls.client_private_key, tls.domain) == (b"CERT", b"KEY", "orders.tmprl.cloud")
    assert tls.server_root_ca_cert is None


def test_api_key_implies_tls(monkeypatch):
    monkeypatch.setenv("TEMPORAL_API_KEY", "secret-key")
    options = connect_options(TemporalSettings())
    assert options["api_key"] == "secret-key" and options["tls"] is True
