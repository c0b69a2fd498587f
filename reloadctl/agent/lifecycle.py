"""Starting and stopping the one agent of this process: idempotent start, stop at exit, fork.

Rules:
1. ``start()`` resolves its settings (``agent.config``) and starts at most one agent per
   process. Called while an agent runs, it returns that ``Agent`` when every setting given
   explicitly (arguments, and ``RELOADCTL_AGENT_LISTEN`` for the address) matches it, so a
   plain ``start()`` in code run under the launcher gets the launcher's agent; a setting
   that differs raises ``AgentAlreadyRunning`` naming the running agent's address.
2. The kill switch ``RELOADCTL_AGENT_DISABLE=1`` makes ``start()`` return a disabled
   ``Agent`` (``enabled`` False, ``address`` ""), so host code never breaks because of it.
3. The default listen address is a unix socket in the private (0700, ours) directory of
   ``proto.address.default_socket_dir``; a directory owned by someone else or with a looser
   mode is refused. A stale socket file at our path (nobody listening) is replaced; a live
   one is an error. The socket file is chmod 0600 and unlinked by ``stop()`` if it is
   still the one we bound.
4. TCP needs a secret (refused at once otherwise); a non-loopback bind logs a warning.
5. All agent threads are daemon threads; ``stop()`` runs at exit and waits for them only a
   bounded time, so it never delays the host's shutdown by more than about a second.
6. In a forked child the parent's agent is not running: the child closes its copies of the
   inherited sockets (never shutting them down: they are shared with the parent, which
   keeps serving) and forgets the agent; ``start()`` in the child starts a new one.
7. rpyc is imported only inside ``start()``.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import socket
import stat
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from reloadctl.agent import config as settings
from reloadctl.errors import AgentAlreadyRunning, AgentError, ConfigError
from reloadctl.proto.address import default_socket_dir, format_address, is_loopback_host
from reloadctl.secrets import Secret

if TYPE_CHECKING:
    from reloadctl.agent.config import AgentConfig
    from reloadctl.agent.jobs import JobManager
    from reloadctl.agent.server import AgentServer
    from reloadctl.proto.address import Address

log = logging.getLogger(__name__)
# A library must not make the host's logging print: without this, records of WARNING and
# above would reach the host's stderr through logging.lastResort when the host configured no
# logging. Hosts that configure logging still receive every record through propagation.
logging.getLogger("reloadctl").addHandler(logging.NullHandler())

_STOP_JOIN_S: Final = 1.0


class Agent:
    """A handle on this process's agent.

    Attributes:
        address: where it listens, in a form the CLI accepts (``""`` when disabled).
        enabled: False for the disabled agent of the kill switch.
    """

    def __init__(
        self,
        address: str,
        *,
        config: AgentConfig | None = None,
        server: AgentServer | None = None,
        jobs: JobManager | None = None,
        thread: threading.Thread | None = None,
        socket_inode: tuple[int, int] | None = None,
    ) -> None:
        self.address = address
        self.config = config
        self.enabled = server is not None
        self._server = server
        self._jobs = jobs
        self._thread = thread
        self._socket_inode = socket_inode
        self._pid = os.getpid()
        self._stopped = server is None
        self._stop_lock = threading.Lock()

    def __repr__(self) -> str:
        state = "running" if self.running else ("disabled" if not self.enabled else "stopped")
        return f"<reloadctl Agent {self.address or '-'} {state}>"

    @property
    def running(self) -> bool:
        """True while this process's agent serves (False after stop, and in a forked child)."""
        return not self._stopped and self._pid == os.getpid()

    def stop(self) -> None:
        """Stop listening, close connections, unlink our socket; idempotent, bounded in time."""
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
        if self._pid != os.getpid():
            self._forget_in_child()
            return
        server = self._server
        assert server is not None
        try:
            server.close()
        except Exception:  # stopping must not raise into the host
            log.exception("error closing the agent's listener")
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(_STOP_JOIN_S)
        if self._jobs is not None:
            self._jobs.stop(timeout=_STOP_JOIN_S)
        # One budget for all connection threads: they were woken by close() and end fast;
        # a thread stuck in a long poll is a daemon and does not hold up the host.
        join_until = time.monotonic() + _STOP_JOIN_S
        for thread in server.connection_threads():
            if thread is not threading.current_thread():
                thread.join(max(0.0, join_until - time.monotonic()))
        self._unlink_socket()
        _forget(self)
        log.info("reloadctl agent at %s stopped", self.address)

    def _unlink_socket(self) -> None:
        if self.config is None or self.config.listen.scheme != "unix":
            return
        path = self.config.listen.path
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if (st.st_dev, st.st_ino) == self._socket_inode:
            try:
                os.unlink(path)
            except OSError as exc:
                log.warning("could not remove the agent socket %s: %s", path, exc)

    def _forget_in_child(self) -> None:
        # Rule 6: close() only; shutdown() would stop the parent's sockets too.
        server = self._server
        if server is None:
            return
        for sock in [server.listener, *list(server.clients)]:
            with contextlib.suppress(OSError):
                sock.close()


_lock = threading.Lock()
_agent: Agent | None = None


def _forget(agent: Agent) -> None:
    global _agent
    if _agent is agent:
        _agent = None


def current_agent() -> Agent | None:
    """The running agent of this process, if any."""
    agent = _agent
    return agent if agent is not None and agent.running else None


def start(
    listen: str | None = None,
    *,
    secret: Secret | bytes | str | None = None,
    secret_file: str | os.PathLike[str] | None = None,
    allow: Sequence[str] | str | None = None,
    read_only: bool | None = None,
    tls_cert: str | os.PathLike[str] | None = None,
    tls_key: str | os.PathLike[str] | None = None,
    tls_ca: str | os.PathLike[str] | None = None,
) -> Agent:
    """Start this process's agent (or return the running one) and return its handle.

    Args:
        listen: address to listen on (``unix:///path``, ``tcp://host:port``); default: the
            ``RELOADCTL_AGENT_LISTEN`` variable, else this process's default unix socket.
        secret: the shared secret (default: ``RELOADCTL_SECRET_FILE``, ``RELOADCTL_SECRET``).
        secret_file: a chmod 600 file holding the secret.
        allow: fnmatch patterns of modules that may be reloaded (default: all).
        read_only: refuse reload and rollback (default: ``RELOADCTL_AGENT_READ_ONLY``).
        tls_cert, tls_key: PEM certificate chain and key for ``tls://`` (default:
            ``RELOADCTL_TLS_CERT``, ``RELOADCTL_TLS_KEY``).
        tls_ca: PEM CA bundle; when set, clients must present a certificate it signed
            (default: ``RELOADCTL_TLS_CA``). Mutual TLS may replace the secret.

    Raises:
        ConfigError: bad address or settings, TCP without a secret, unsafe socket directory.
        AgentAlreadyRunning: another agent with different settings runs in this process.
        AgentError: the address cannot be bound.
    """
    global _agent
    if settings.disabled():
        log.info("reloadctl agent disabled by %s", settings.DISABLE_ENV)
        return Agent("")
    with _lock:
        running = current_agent()
        if running is not None:
            assert running.config is not None
            differ = _differences(
                running.config,
                listen=listen,
                secret=secret,
                secret_file=secret_file,
                allow=allow,
                read_only=read_only,
            )
            if not differ:
                return running
            raise AgentAlreadyRunning(
                f"a reloadctl agent already runs in this process at {running.address} with "
                f"a different {', '.join(differ)}; stop() it first"
            )
        cfg = settings.build_config(
            listen,
            secret=secret,
            secret_file=secret_file,
            allow=allow,
            read_only=read_only,
            tls_cert=tls_cert,
            tls_key=tls_key,
            tls_ca=tls_ca,
        )
        _agent = _launch(cfg)
        return _agent


def _differences(
    have: AgentConfig,
    *,
    listen: str | None,
    secret: Secret | bytes | str | None,
    secret_file: str | os.PathLike[str] | None,
    allow: Sequence[str] | str | None,
    read_only: bool | None,
) -> list[str]:
    """Names of the settings given explicitly (not None) that differ from ``have``."""
    differ: list[str] = []
    explicit = listen is not None or os.environ.get(settings.LISTEN_ENV, "").strip()
    if explicit and not _same_listen(settings.listen_address(listen), have.listen):
        differ.append("listen")
    if (secret is not None or secret_file is not None) and settings.agent_secret(
        secret, secret_file
    ) != have.secret:
        differ.append("secret")
    if allow is not None and settings.allow_patterns(allow) != have.allow:
        differ.append("allow")
    if read_only is not None and settings.read_only_mode(read_only) != have.read_only:
        differ.append("read_only")
    return differ


def _same_listen(wanted: Address, running: Address) -> bool:
    # "tcp://host:0" asked for any free port: the running agent's real port satisfies it.
    if wanted.scheme != "unix" and wanted.port == 0:
        return (wanted.scheme, wanted.host) == (running.scheme, running.host)
    return wanted == running


def _prepare_unix_path(path: str, *, default_dir: bool) -> None:
    parent = Path(path).parent
    if default_dir:
        settings.ensure_private_dir(parent)
    elif not parent.is_dir():
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


def _launch(cfg: AgentConfig) -> Agent:
    from reloadctl.agent.jobs import JobManager
    from reloadctl.agent.server import create_server
    from reloadctl.agent.service import AgentService, AgentState

    address = cfg.listen
    if address.scheme == "unix":
        default_dir = Path(address.path).parent == default_socket_dir()
        _prepare_unix_path(address.path, default_dir=default_dir)
    elif not is_loopback_host(address.host) and address.scheme == "tls":
        log.warning(
            "reloadctl agent listening on %s, which is not loopback: anyone who can reach it "
            "and authenticates can run code in this process",
            format_address(address),
        )
    elif not is_loopback_host(address.host):
        log.warning(
            "reloadctl agent listening on %s, which is not loopback: anyone who can reach it "
            "and knows the secret can run code in this process; the session is not encrypted",
            format_address(address),
        )
    jobs = JobManager(allow=cfg.allow)
    state: dict[str, Any] = {}

    def service_factory() -> AgentService:
        return AgentService(state["state"])

    try:
        server = create_server(cfg, service_factory)
    except OSError as exc:
        raise AgentError(f"cannot listen on {format_address(address)}: {exc.strerror}") from None
    try:
        server._listen()
    except OSError as exc:
        server.close()
        raise AgentError(f"cannot listen on {format_address(address)}: {exc.strerror}") from None
    if address.scheme == "unix":
        st = os.lstat(address.path)
        inode: tuple[int, int] | None = (st.st_dev, st.st_ino)
        text = format_address(address)
    else:
        inode = None
        real = replace(address, port=int(server.port))
        text = format_address(real)
        cfg = replace(cfg, listen=real) if address.port == 0 else cfg
    state["state"] = AgentState(config=cfg, jobs=jobs, address=text)
    thread = threading.Thread(
        target=_serve_forever, args=(server,), name="reloadctl-agent", daemon=True
    )
    agent = Agent(text, config=cfg, server=server, jobs=jobs, thread=thread, socket_inode=inode)
    thread.start()
    _register_process_hooks()
    log.info("reloadctl agent listening at %s (pid %d)", text, os.getpid())
    return agent


def _serve_forever(server: AgentServer) -> None:
    try:
        server.start()
    except BaseException:  # the accept thread never prints to stderr
        log.exception("reloadctl agent listener stopped")


_hooks_registered = False


def _register_process_hooks() -> None:
    global _hooks_registered
    if _hooks_registered:
        return
    _hooks_registered = True
    atexit.register(_stop_at_exit)
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork_in_child)


def _stop_at_exit() -> None:
    agent = _agent
    if agent is not None:
        try:
            agent.stop()
        except Exception:  # exit must go on
            log.exception("error stopping the agent at exit")


def _after_fork_in_child() -> None:
    global _agent, _lock
    # The lock may have been held by a parent thread at fork time: never reuse it.
    _lock = threading.Lock()
    agent = _agent
    _agent = None
    if agent is not None:
        # Not agent.stop(): its lock may have been held by a parent thread at fork time.
        agent._stopped = True
        try:
            agent._forget_in_child()
        except Exception:  # a fork must never fail because of us
            log.debug("closing inherited agent sockets failed", exc_info=True)


__all__ = ["Agent", "current_agent", "start"]
