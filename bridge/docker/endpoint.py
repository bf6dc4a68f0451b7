"""Where the engine's API listens, read from DOCKER_HOST, DOCKER_TLS_VERIFY and
DOCKER_CERT_PATH as the Docker SDK and CLI read them: one reading for the engine's calls and
for the stdio attach alike."""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_SOCKET = "/var/run/docker.sock"


class EndpointError(Exception):
    """DOCKER_HOST or the TLS files cannot be used; the message says which and why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where the engine's API listens, as DOCKER_HOST and the TLS variables say."""

    unix_path: str | None = None
    host: str = ""
    port: int = 0
    tls: ssl.SSLContext | None = None

    def __str__(self) -> str:
        if self.unix_path is not None:
            return f"unix://{self.unix_path}"
        return f"{'https' if self.tls else 'tcp'}://{self.host}:{self.port}"


def endpoint_from_env(env: Mapping[str, str] | None = None) -> Endpoint:
    """The engine as the Docker SDK (and CLI) would find it from these variables. The TLS
    files are read now: call again to pick up mended ones."""
    env = os.environ if env is None else env
    docker_host = (env.get("DOCKER_HOST") or "").strip() or f"unix://{DEFAULT_SOCKET}"
    if "://" not in docker_host:  # host:port alone is TCP, to the SDK and the CLI
        docker_host = f"tcp://{docker_host}"
    parts = urlsplit(docker_host)
    if parts.scheme in ("unix", "http+unix"):
        # unix://var/run/docker.sock (two slashes) is unix:///var/run/docker.sock, as the
        # SDK reads it: the first part of the path lands in the netloc
        path = f"/{parts.netloc}{parts.path}" if parts.netloc else parts.path
        return Endpoint(unix_path=path or DEFAULT_SOCKET)
    if parts.scheme not in ("tcp", "http", "https"):
        raise EndpointError(f"DOCKER_HOST {docker_host}: mcp-bridge needs unix:// or tcp://")
    # As the SDK: TLS when DOCKER_TLS_VERIFY is set (the engine verified), or when only
    # DOCKER_CERT_PATH is (a client certificate, the engine not verified).
    verify = bool(env.get("DOCKER_TLS_VERIFY"))
    use_tls = verify or bool(env.get("DOCKER_CERT_PATH")) or parts.scheme == "https"
    tls = None
    if use_tls:
        cert_path = Path(env.get("DOCKER_CERT_PATH") or Path.home() / ".docker")
        if verify:  # what is missing, by name: the TLS library's own error names no file
            needed = ("ca.pem", "cert.pem", "key.pem")
            missing = [f for f in needed if not (cert_path / f).is_file()]
            if missing:
                raise EndpointError(
                    f"DOCKER_TLS_VERIFY is set and DOCKER_CERT_PATH {cert_path} has no"
                    f" {', '.join(missing)}"
                )
        try:
            tls = _tls_context(cert_path, verify)
        except (OSError, ssl.SSLError) as exc:
            raise EndpointError(f"TLS files in {cert_path}: {exc}") from exc
    port = parts.port or (2376 if use_tls else 2375)
    return Endpoint(host=parts.hostname or "127.0.0.1", port=port, tls=tls)


def _tls_context(cert_path: Path, verify: bool) -> ssl.SSLContext:
    """The engine's CA verifies it and the client certificate proves us, as for the SDK.
    ca.pem is the only CA trusted: not the system's, nor a bundle SSL_CERT_FILE,
    REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE points at (a corporate CA must not vouch for
    the engine)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # hostname checked, cert required
    if verify:
        context.load_verify_locations(cafile=str(cert_path / "ca.pem"))
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    cert, key = cert_path / "cert.pem", cert_path / "key.pem"
    if cert.is_file() and key.is_file():
        context.load_cert_chain(str(cert), str(key))
    return context
