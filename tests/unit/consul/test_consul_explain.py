"""The errors explained, as docs/operations.md tells them ("Consul over mutual TLS with
ACLs"): one line naming the cause (a CA that did not sign Consul's certificate, an expired
client certificate, a token without rights, an unreadable file), then the error; and
mending the file is enough, against a stub Consul over mutual TLS (tests/consul_stub.py)."""

from __future__ import annotations

import errno
import shutil
import ssl
from pathlib import Path

import consul.exceptions
import pytest

from bridge.consul.client import ConsulClient
from bridge.consul.http import (
    RateLimited,
    explain,
)
from bridge.core.protocols import ConsulUnavailable
from tests.consul_stub import (
    StubConsul,
    VirtualTime,
    serving,
)
from tests.pki import Authority


@pytest.fixture
def vt() -> VirtualTime:
    return VirtualTime()


# ---- explain ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pki")
    ca, other = Authority(root / "ca", "ca"), Authority(root / "other", "other")
    server = ca.issue("server", server=True)
    client = ca.issue("client", server=False)
    expired = ca.issue("expired", server=False, expired=True)
    return {
        "ca": ca.pem,
        "other_ca": other.pem,
        "server": server.cert,
        "server_key": server.key,
        "client": client.cert,
        "client_key": client.key,
        "expired": expired.cert,
    }


def ssl_error(reason: str, text: str) -> ssl.SSLError:
    """An SSLError as the ssl module words it (str: "[SSL: REASON] text (_ssl.c:…)")."""
    return ssl.SSLError(1, f"[SSL: {reason}] {text} (_ssl.c:1000)")


@pytest.mark.parametrize(
    ("error", "cause"),
    [
        (
            ssl.SSLCertVerificationError(
                1,
                "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get"
                " local issuer certificate (_ssl.c:1000)",
            ),
            "TLS: Consul's certificate does not verify against CONSUL_CACERT",
        ),
        (
            ssl_error("SSLV3_ALERT_CERTIFICATE_EXPIRED", "sslv3 alert certificate expired"),
            "TLS: Consul refused the client certificate, which has expired",
        ),
        (
            ssl_error("TLSV13_ALERT_CERTIFICATE_REQUIRED", "tlsv13 alert certificate required"),
            "TLS: Consul wants a client certificate (CONSUL_CLIENT_CERT/_KEY)",
        ),
        (
            ssl_error("SSLV3_ALERT_BAD_CERTIFICATE", "sslv3 alert bad certificate"),
            "TLS: Consul refused the client certificate (CONSUL_CLIENT_CERT/_KEY)",
        ),
        (
            ssl_error("TLSV1_ALERT_UNKNOWN_CA", "tlsv1 alert unknown ca"),
            "TLS: Consul does not know the client certificate's CA",
        ),
        (
            FileNotFoundError(errno.ENOENT, "No such file or directory"),
            "cannot read a TLS file (CONSUL_CACERT, CONSUL_CLIENT_CERT, CONSUL_CLIENT_KEY)",
        ),
        (
            # A key file of another user: the same, and no word of the token.
            PermissionError(errno.EACCES, "Permission denied"),
            "cannot read a TLS file (CONSUL_CACERT, CONSUL_CLIENT_CERT, CONSUL_CLIENT_KEY)",
        ),
        (
            consul.exceptions.ACLPermissionDenied("Permission denied"),
            "the token lacks a permission (its policy: docs/operations.md)",
        ),
        (
            consul.exceptions.ACLPermissionDenied("ACL not found"),
            "Consul does not know the token (CONSUL_HTTP_TOKEN)",
        ),
        (RateLimited(None, "rate limit exceeded"), "rate limited by Consul"),
    ],
)
def test_explain_names_the_cause_then_the_error(error: Exception, cause: str) -> None:
    said = explain(error)
    assert said == f"{cause} ({type(error).__name__}: {error})"
    assert "\n" not in said


def test_explain_leaves_an_error_it_has_no_cause_for_as_it_is() -> None:
    error = ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
    assert explain(error) == "ConnectionRefusedError: [Errno 111] Connection refused"


@pytest.mark.parametrize(
    "alert",
    [
        ssl_error("SSLV3_ALERT_CERTIFICATE_EXPIRED", "sslv3 alert certificate expired"),
        ssl_error("SSLV3_ALERT_BAD_CERTIFICATE", "sslv3 alert bad certificate"),
    ],
)
def test_a_refused_client_certificate_that_has_expired_says_when(
    alert: ssl.SSLError, pki: dict[str, Path]
) -> None:
    said = explain(alert, client_cert=str(pki["expired"]))
    # docs/operations.md: "TLS: Consul refused the client certificate …: it expired on
    # <date> (…)"
    assert said.startswith("TLS: Consul refused the client certificate")
    assert ": it expired on " in said and " GMT (SSLError: " in said


def test_a_refused_client_certificate_still_valid_or_unreadable_says_no_date(
    pki: dict[str, Path], tmp_path: Path
) -> None:
    alert = ssl_error("SSLV3_ALERT_BAD_CERTIFICATE", "sslv3 alert bad certificate")
    for cert in (pki["client"], tmp_path / "missing.pem"):
        said = explain(alert, client_cert=str(cert))
        assert "expired on" not in said
        assert said.startswith("TLS: Consul refused the client certificate (CONSUL_CLIENT")


def test_an_expired_client_certificate_is_not_blamed_for_other_errors(
    pki: dict[str, Path],
) -> None:
    said = explain(consul.exceptions.ACLPermissionDenied("Permission denied"), str(pki["expired"]))
    assert "expired" not in said


async def test_a_wrong_ca_is_named_and_mending_the_file_is_enough(
    pki: dict[str, Path], tmp_path: Path, vt: VirtualTime
) -> None:
    """Mutual TLS against a stub: CONSUL_CACERT that did not sign the server's certificate
    is one clear line; the client is made anew after it, so the mended file is read."""
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki["ca"]))
    server.load_cert_chain(str(pki["server"]), str(pki["server_key"]))
    server.verify_mode = ssl.CERT_REQUIRED
    cacert = tmp_path / "ca.pem"
    shutil.copy(pki["other_ca"], cacert)
    async with serving(StubConsul(vt), server) as url:
        consul = ConsulClient(
            url, "n1", cacert=str(cacert), client_cert=str(pki["client"]),
            client_key=str(pki["client_key"]), sleep=vt.sleep, clock=vt.clock,
        )  # fmt: skip
        try:
            (error,) = await vt.run(consul.leader())
            assert isinstance(error, ConsulUnavailable)
            said = str(error)
            assert said.startswith(
                f"status/leader at {url}: TLS: Consul's certificate does not verify against"
                " CONSUL_CACERT ("
            ), said
            assert "CERTIFICATE_VERIFY_FAILED" in said and "\n" not in said
            shutil.copy(pki["ca"], cacert)  # mended in place
            assert await vt.run(consul.leader()) == ["127.0.0.1:8300"]
        finally:
            await consul.close()
