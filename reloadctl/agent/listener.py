"""Where the agent listens: the private socket directory, stale sockets, binding.

Rules:
1. The default unix socket lives in the private (0700, ours) directory of
   ``proto.address.default_socket_dir``; a directory owned by someone else or with a looser
   mode is refused. Another directory must exist.
2. A stale socket file at our path (nobody listening) is replaced; a live one is an error,
   and so is a path that is not a socket or belongs to another uid.
3. The socket file is chmod 0600 between ``bind`` and ``listen``: the directory is ours and
   0700, so nobody could connect in between anyway. ``unlink_if_ours`` removes it only if
   the file at the path is still the one we bound.
4. TCP and TLS listeners bind the address given (``SO_REUSEADDR``); a non-loopback address
   logs a warning. Listeners have no timeout: whoever accepts blocks until a client comes
   or the listener is shut down.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
from dataclasses import dataclass, replace

from reloadctl.agent.config import ensure_private_dir
from reloadctl.errors import AgentError, ConfigError
from reloadctl.proto.address import (
    default_socket_dir_path,
    format_address,
    is_loopback_host,
    parse_socket_name,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from reloadctl.proto.address import Address

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Listener:
    """A bound, listening socket and what the agent needs to know about it."""

    sock: socket.socket
    #: The address clients reach it at (a TCP port 0 replaced by the real one).
    address: Address
    #: ``(st_dev, st_ino)`` of a unix socket file, to unlink only our own (rule 3).
    inode: tuple[int, int] | None = None


def listen(address: Address) -> Listener:
    """Bind and listen on ``address`` (rules 1-4).

    Raises:
        ConfigError: the socket directory is missing or not private.
        AgentError: the address cannot be bound, or a live or foreign socket is there.
    """
    if address.scheme == "unix":
        return _listen_unix(address)
    if not is_loopback_host(address.host):
        log.warning(
            "reloadctl agent listening on %s, which is not loopback: anyone who can reach "
            "it and %s can run code in this process%s",
            format_address(address),
            "authenticates" if address.scheme == "tls" else "knows the secret",
            "" if address.scheme == "tls" else "; the session is not encrypted",
        )
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    try:
        where = socket.getaddrinfo(
            address.host,
            address.port,
            family=family,
            type=socket.SOCK_STREAM,
            proto=socket.IPPROTO_TCP,
            flags=socket.AI_PASSIVE,
        )[0][-1]
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        raise _cannot_listen(address, exc) from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(where)
        sock.listen(socket.SOMAXCONN)
    except OSError as exc:
        sock.close()
        raise _cannot_listen(address, exc) from None
    port = int(sock.getsockname()[1])
    return Listener(sock, address if address.port == port else _with_port(address, port))


def _with_port(address: Address, port: int) -> Address:
    return replace(address, port=port)


def _cannot_listen(address: Address, exc: OSError) -> AgentError:
    reason = exc.strerror or str(exc)
    return AgentError(f"cannot listen on {format_address(address)}: {reason}")


def _listen_unix(address: Address) -> Listener:
    path = address.path
    default_dir = os.path.dirname(path) == default_socket_dir_path()
    _prepare_unix_path(path, default_dir=default_dir)
    if default_dir:
        remove_stale_own_sockets(os.path.dirname(path))
    sock = _bind_unix(path)
    st = os.lstat(path)
    return Listener(sock, address, (st.st_dev, st.st_ino))


def unlink_if_ours(path: str, inode: tuple[int, int] | None) -> None:
    """Remove the socket file at ``path`` if it is still the one we bound (rule 3)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if (st.st_dev, st.st_ino) == inode:
        try:
            os.unlink(path)
        except OSError as exc:
            log.warning("could not remove the agent socket %s: %s", path, exc)


def wait_for_client(sock: socket.socket) -> None:
    """Sleep until a client connects to the listening ``sock`` or it is shut down; no
    timeout: an idle agent never wakes up."""
    import select

    poller = select.poll()
    poller.register(sock, select.POLLIN)
    poller.poll()


def _prepare_unix_path(path: str, *, default_dir: bool) -> None:
    parent = os.path.dirname(path)
    if default_dir:
        ensure_private_dir(parent)
    elif not os.path.isdir(parent):
        raise ConfigError(f"directory {parent} of the agent socket does not exist")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise AgentError(f"{path} exists and is not a socket; refusing to replace it")
    if st.st_uid != os.getuid():
        raise AgentError(f"socket {path} belongs to uid {st.st_uid}; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(0.5)
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        log.info("removing stale agent socket %s", path)
        os.unlink(path)
        return
    except OSError as exc:
        raise AgentError(f"cannot check existing socket {path}: {exc}") from None
    finally:
        probe.close()
    raise AgentError(f"another agent is already listening at {path}")


def remove_stale_own_sockets(directory: str) -> None:
    """Remove sockets named with our pid that nobody serves: left by this very process
    before it exec'd (a forked child whose agent started, then ``exec``, as gunicorn's
    USR2 re-exec does), they would make ``--local`` report a live process that never
    answers. Our pid is ours alone, so a refused connection means stale."""
    suffix = f"-{os.getpid()}.sock"
    try:
        names = [n for n in os.listdir(directory) if n.endswith(suffix)]
    except OSError:
        return
    for name in names:
        parsed = parse_socket_name(name)
        path = os.path.join(directory, name)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if parsed is None or not stat.S_ISSOCK(st.st_mode) or st.st_uid != os.getuid():
            continue
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(0.5)
            probe.connect(path)
        except ConnectionRefusedError:
            with contextlib.suppress(OSError):
                os.unlink(path)
                log.info("removed stale agent socket %s of this pid", path)
        except OSError:
            pass
        finally:
            probe.close()


def _bind_unix(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        # The directory is 0700 and ours, so nobody could connect in between; 0600 anyway.
        os.chmod(path, 0o600)
        sock.listen(socket.SOMAXCONN)
    except OSError as exc:
        sock.close()
        with contextlib.suppress(OSError):
            if os.path.exists(path):
                os.unlink(path)
        raise AgentError(f"cannot listen on unix://{path}: {exc.strerror}") from None
    return sock
