"""Whether a container speaks MCP on stdio, and whether it can be served that way.

`mcp.transport=stdio` says so; without a transport label, a container with open stdin and
neither an exposed TCP port nor `mcp.port` is taken as stdio (most stdio images expose
nothing, so `docker run -d -i --name mcp-time <image>` just works). Open stdin, TTY and
StdinOnce come from one inspect (model.Stdin): the listing does not carry them, so the pass
asks for them only for the containers `needs_stdin` names.

A stdio container is served by the bridge on a pool port, so it is always `proxy`; the
labels about the container's own port and network mean nothing for it and are errors that
say so. Pure; labels/parse.py calls it.
"""

from __future__ import annotations

from collections.abc import Mapping

from bridge.core.model import CheckKind, Container, Stdin, Transport
from bridge.labels.values import Bad

# Labels about the container's own network endpoint: a stdio server has none.
_NO_MEANING = ("port", "expose", "network")


def _own_transport(container: Container, prefix: str) -> str | None:
    return container.labels.get(prefix + "transport")


def needs_stdin(container: Container, prefix: str) -> bool:
    """Whether deciding this container's transport needs its inspect (model.Stdin)."""
    said = _own_transport(container, prefix)
    if said is not None:
        return said == Transport.STDIO.value
    return prefix + "port" not in container.labels and not container.exposed_tcp


def wants_stdio(container: Container, own: Mapping[str, str]) -> bool:
    said = own.get("transport")
    if said is not None:
        return said == Transport.STDIO.value
    stdin = container.stdin
    return (
        "port" not in own
        and not container.exposed_tcp
        and stdin is not None
        and stdin.open
        and not stdin.host_network
    )


def check(container: Container, own: Mapping[str, str], prefix: str) -> None:
    """Raise Bad when this stdio container cannot be served, or a label means nothing."""
    for suffix in _NO_MEANING:
        if suffix == "expose" and own.get(suffix) in ("proxy", "auto"):
            continue  # what a stdio server is anyway
        if suffix in own:
            raise Bad(
                suffix,
                own[suffix],
                f"means nothing for a stdio server (it has no port or network of its own: "
                f"the bridge serves it on a pool port): remove {prefix}{suffix}",
            )
    kind = own.get("check")
    if kind in (CheckKind.HTTP.value, CheckKind.TCP.value):
        raise Bad(
            "check",
            kind,
            f"a stdio server has no port of its own for Consul to check: use "
            f"{prefix}check=mcp (the default), docker or none",
        )
    said = own.get("transport", "")
    stdin = container.stdin
    if stdin is None:
        raise Bad("transport", said, "the container's stdin settings could not be read yet")
    problem = _stdin_problem(stdin)
    if problem is not None:
        raise Bad("transport", said, problem)


def _stdin_problem(stdin: Stdin) -> str | None:
    if not stdin.open:
        return (
            "a stdio server needs its stdin kept open: start it with `docker run -d -i ...`"
            " (compose: `stdin_open: true`)"
        )
    if stdin.tty:
        return (
            "a stdio server needs a plain pipe, and this container has a TTY (`-t`, compose"
            " `tty: true`), which rewrites the JSON lines: start it without -t"
        )
    if stdin.once:
        return (
            "the container has StdinOnce set (created attached to stdin, `docker run -a"
            " stdin` or `-i` without -d): the first client to detach would close the"
            " server's stdin: start it with `docker run -d -i ...`"
        )
    return None
