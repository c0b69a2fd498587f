"""Starting and stopping the one agent of this process: start, stop at exit, fork, children.

Rules:
1. ``start()`` resolves its settings (``agent.config``) and starts at most one agent per
   process. Called while an agent runs, it returns that ``Agent`` when every setting given
   explicitly (arguments, and ``RELOADCTL_AGENT_LISTEN`` for the address) matches it, so a
   plain ``start()`` in code run under the launcher gets the launcher's agent; a setting
   that differs raises ``AgentAlreadyRunning`` naming the running agent's address. A
   ``loop`` may be attached to a running agent that has none.
2. The kill switch ``RELOADCTL_AGENT_DISABLE=1`` makes ``start()`` return a disabled
   ``Agent`` (``enabled`` False, ``address`` ""), so host code never breaks because of it.
3. The default listen address is a unix socket in the private (0700, ours) directory of
   ``proto.address.default_socket_dir``; a directory owned by someone else or with a looser
   mode is refused. A stale socket file at our path (nobody listening) is replaced; a live
   one is an error. The socket file is chmod 0600 and unlinked by ``stop()`` if it is
   still the one we bound.
4. TCP needs a secret (refused at once otherwise); a non-loopback bind logs a warning.
5. Cheap for the host: ``start()`` validates every setting and binds the unix socket on the
   caller's thread (errors raise at once, ``address`` is final, clients may connect at
   once), then returns. The agent thread (``reloadctl-agent``) sleeps in ``poll()`` until
   a first client connects, and only then imports rpyc and builds the server; the engine
   is imported by the first job (``status`` does not need it before). TCP and TLS agents
   are built on the caller's thread (their errors, e.g. a bad certificate, raise from
   ``start()``).
6. All agent threads are daemon threads; ``stop()`` runs at exit and waits for them only a
   bounded time, so it never delays the host's shutdown by more than about a second.
7. Fork: no lock of ours is reused in a child (fresh ones are made there), and a fork
   waits (at most ``FORK_WAIT_S``) for a running reload, so no child starts from a
   half-swapped module. In the child the parent's agent is not running: the child closes
   its copies of the inherited sockets (never shutting them down: the parent keeps
   serving) and forgets the agent.
8. Inheritance (off unless asked: ``start(inherit=True)``, ``RELOADCTL_AGENT_INHERIT=1``,
   ``start_in_children()``, or the launcher): the program's worker processes get their own
   agent, each on its default unix socket ``<prog>-<its pid>.sock`` (an explicit address,
   TCP port or socket path, belongs to the one process it was given to), with the same
   secret, allow list and read-only mode. Worker processes are forked children (os.fork,
   gunicorn, multiprocessing fork) and multiprocessing children started by spawn or
   forkserver (uvicorn ``--workers``); other interpreters the program starts get none.
   Forked children are handled by the at-fork hook; spawned ones by the environment (see
   ``reloadctl.agent.auto``) that inheritance exports: ``RELOADCTL_AGENT_INHERIT=1``, the
   program name, allow and read-only, and the bootstrap directory on ``PYTHONPATH``.
   ``RELOADCTL_AGENT_LISTEN`` is consumed (removed from ``os.environ``) by the process
   whose agent it started, so no child reuses it.
9. ``start_in_children()`` is for pre-fork masters: no agent (no thread) in this process,
   inheritance for its children; on Python 3.12+ a thread in a process that forks makes
   every fork warn that it "may lead to deadlocks".
10. ``start(loop=asyncio_loop)``: every engine call of a job runs on that event loop
    (``agent.dispatch``).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from reloadctl.agent import config as settings
from reloadctl.agent.dispatch import EngineGate
from reloadctl.errors import AgentAlreadyRunning, AgentError, ConfigError
from reloadctl.proto.address import default_socket_dir_path, format_address, is_loopback_host

# typing is never imported at run time (annotations are strings): the host pays for it
# only if it uses it.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import asyncio
    from types import FrameType
    from typing import Any, Final

    from reloadctl.agent.config import AgentConfig
    from reloadctl.agent.jobs import JobManager
    from reloadctl.agent.server import AgentServer
    from reloadctl.proto.address import Address
    from reloadctl.secrets import Secret

log = logging.getLogger(__name__)
# A library must not make the host's logging print: without this, records of WARNING and
# above would reach the host's stderr through logging.lastResort when the host configured no
# logging. Hosts that configure logging still receive every record through propagation.
logging.getLogger("reloadctl").addHandler(logging.NullHandler())

_STOP_JOIN_S: Final = 1.0
#: How long a fork waits for a running reload to end before it goes on regardless.
FORK_WAIT_S: Final = 5.0
#: The directory whose ``sitecustomize.py`` activates agents in spawned children (rule 8).
BOOTSTRAP_DIR: Final = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bootstrap")

# -- the agent handle -----------------------------------------------------------------------


class Agent:
    """A handle on this process's agent.

    Attributes:
        address: where it listens, in a form the CLI accepts (``""`` when disabled).
        enabled: False for the disabled agent of the kill switch.
        inherit: whether this process's worker processes get their own agents (rule 8).
    """

    def __init__(
        self,
        address: str,
        *,
        config: AgentConfig | None = None,
        listener: socket.socket | None = None,
        engine: EngineGate | None = None,
        inherit: bool = False,
        socket_inode: tuple[int, int] | None = None,
    ) -> None:
        self.address = address
        self.config = config
        self.enabled = listener is not None
        self.inherit = inherit
        self._listener = listener
        self._engine = engine if engine is not None else EngineGate()
        self._server: AgentServer | None = None
        self._jobs: JobManager | None = None
        self._thread: threading.Thread | None = None
        self._socket_inode = socket_inode
        self._pid = os.getpid()
        self._stopped = listener is None
        self._serving = threading.Event()
        #: held by the agent thread while it imports and builds the server (rule 7)
        self._building = threading.Lock()
        self._state_lock = threading.Lock()

    def __repr__(self) -> str:
        state = "running" if self.running else ("disabled" if not self.enabled else "stopped")
        return f"<reloadctl Agent {self.address or '-'} {state}>"

    @property
    def running(self) -> bool:
        """True while this process's agent serves (False after stop, and in a forked child)."""
        return not self._stopped and self._pid == os.getpid()

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop engine calls run on (rule 10), if any."""
        return self._engine.loop

    def wait_serving(self, timeout: float | None = None) -> bool:
        """Wait until the agent thread runs (clients may connect from ``start()`` on: they
        queue until then)."""
        return self._serving.wait(timeout)

    def stop(self) -> None:
        """Stop listening, close connections, unlink our socket; idempotent, bounded in time."""
        with self._state_lock:
            if self._stopped:
                return
            self._stopped = True
            server = self._server
        if self._pid != os.getpid():
            self._forget_in_child()
            return
        try:
            if server is not None:
                server.close()
            elif self._listener is not None:
                # Wakes the thread's poll(); it sees _stopped and builds no server.
                with contextlib.suppress(OSError):
                    self._listener.shutdown(socket.SHUT_RDWR)
                self._listener.close()
        except Exception:  # stopping must not raise into the host
            log.exception("error closing the agent's listener")
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(_STOP_JOIN_S)
        if self._jobs is not None:
            self._jobs.stop(timeout=_STOP_JOIN_S)
        if server is not None:
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
        # Rule 7: close() only; shutdown() would stop the parent's sockets too.
        server = self._server
        socks = [] if self._listener is None else [self._listener]
        if server is not None:
            socks += [server.listener, *list(server.clients)]
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.close()


@dataclass(frozen=True, slots=True)
class Inheritance:
    """What a worker process's own agent is started with (rule 8)."""

    secret: Secret | None
    allow: tuple[str, ...] | None
    read_only: bool


_lock = threading.Lock()
_agent: Agent | None = None
_inherit: Inheritance | None = None


def _forget(agent: Agent) -> None:
    global _agent
    if _agent is agent:
        _agent = None


def current_agent() -> Agent | None:
    """The running agent of this process, if any."""
    agent = _agent
    return agent if agent is not None and agent.running else None


def inheritance() -> Inheritance | None:
    """The settings this process's children start their agents with, if inheritance is on."""
    return _inherit


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
    inherit: bool | None = None,
    loop: asyncio.AbstractEventLoop | None = None,
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
        inherit: worker processes (forked, multiprocessing) get their own agents (rule 8;
            default: ``RELOADCTL_AGENT_INHERIT``).
        loop: an asyncio event loop to run every reload and rollback on (rule 10).

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
                running,
                listen=listen,
                secret=secret,
                secret_file=secret_file,
                allow=allow,
                read_only=read_only,
                inherit=inherit,
                loop=loop,
                tls=(tls_cert, tls_key, tls_ca),
            )
            if differ:
                raise AgentAlreadyRunning(
                    f"a reloadctl agent already runs in this process at {running.address} "
                    f"with a different {', '.join(differ)}; stop() it first"
                )
            if loop is not None:
                running._engine.loop = loop
            return running
        from_env = listen is None and bool(os.environ.get(settings.LISTEN_ENV, "").strip())
        if from_env:
            # Rule 8: the variable was meant for this process; no child may reuse it.
            listen = os.environ.pop(settings.LISTEN_ENV).strip()
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
        wants_children = settings.inherit_mode(inherit)
        _agent = _launch(cfg, EngineGate(loop), inherit=wants_children)
        if wants_children:
            _enable_inheritance(Inheritance(cfg.secret, cfg.allow, cfg.read_only))
        return _agent


def start_in_children(
    *,
    secret: Secret | bytes | str | None = None,
    secret_file: str | os.PathLike[str] | None = None,
    allow: Sequence[str] | str | None = None,
    read_only: bool | None = None,
) -> None:
    """Give every worker process of this one its own agent, and this process none (rule 9).

    For a pre-fork master (gunicorn's arbiter, a forkserver): its workers, forked or
    spawned, each start an agent on their default unix socket with these settings.

    Raises:
        ConfigError: bad settings (checked now, as ``start()`` would).
    """
    if settings.disabled():
        log.info("reloadctl agent disabled by %s", settings.DISABLE_ENV)
        return
    with _lock:
        os.environ.pop(settings.LISTEN_ENV, None)  # rule 8: never an address for children
        cfg = settings.build_config(
            None, secret=secret, secret_file=secret_file, allow=allow, read_only=read_only
        )
        _enable_inheritance(Inheritance(cfg.secret, cfg.allow, cfg.read_only))
        _register_process_hooks()
        _remove_stale_own_sockets(default_socket_dir_path())
    log.info("reloadctl: no agent in this process (pid %d); its workers get one", os.getpid())


TLS_NAMES: Final = ("tls_cert", "tls_key", "tls_ca")


def _differences(
    running: Agent,
    *,
    listen: str | None,
    secret: Secret | bytes | str | None,
    secret_file: str | os.PathLike[str] | None,
    allow: Sequence[str] | str | None,
    read_only: bool | None,
    inherit: bool | None,
    loop: asyncio.AbstractEventLoop | None,
    tls: tuple[str | os.PathLike[str] | None, ...] = (None, None, None),
) -> list[str]:
    """Names of the settings given explicitly (not None) that differ from ``running``."""
    have = running.config
    assert have is not None
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
    if inherit is not None and bool(inherit) != running.inherit:
        differ.append("inherit")
    if loop is not None and running.loop is not None and loop is not running.loop:
        differ.append("loop")
    running_tls = (have.tls_cert, have.tls_key, have.tls_ca)
    for name, given, current in zip(TLS_NAMES, tls, running_tls, strict=True):
        if given is not None and os.path.abspath(os.path.expanduser(given)) != current:
            differ.append(name)
    return differ


def _same_listen(wanted: Address, running: Address) -> bool:
    # "tcp://host:0" asked for any free port: the running agent's real port satisfies it.
    if wanted.scheme != "unix" and wanted.port == 0:
        return (wanted.scheme, wanted.host) == (running.scheme, running.host)
    return wanted == running


def _prepare_unix_path(path: str, *, default_dir: bool) -> None:
    import stat

    parent = os.path.dirname(path)
    if default_dir:
        settings.ensure_private_dir(parent)
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


def _remove_stale_own_sockets(directory: str) -> None:
    """Remove sockets named with our pid that nobody serves: left by this very process
    before it exec'd (a forked child whose agent started, then ``exec``, as gunicorn's
    USR2 re-exec does), they would make ``--local`` report a live process that never
    answers. Our pid is ours alone, so a refused connection means stale."""
    import stat

    from reloadctl.proto.address import parse_socket_name

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


def _launch(cfg: AgentConfig, engine: EngineGate, *, inherit: bool) -> Agent:
    address = cfg.listen
    if address.scheme == "unix":
        default_dir = os.path.dirname(address.path) == default_socket_dir_path()
        _prepare_unix_path(address.path, default_dir=default_dir)
        if default_dir:
            _remove_stale_own_sockets(os.path.dirname(address.path))
        listener = _bind_unix(address.path)
        st = os.lstat(address.path)
        agent = Agent(
            format_address(address),
            config=cfg,
            listener=listener,
            engine=engine,
            inherit=inherit,
            socket_inode=(st.st_dev, st.st_ino),
        )
    else:
        if not is_loopback_host(address.host):
            log.warning(
                "reloadctl agent listening on %s, which is not loopback: anyone who can reach "
                "it and %s can run code in this process%s",
                format_address(address),
                "authenticates" if address.scheme == "tls" else "knows the secret",
                "" if address.scheme == "tls" else "; the session is not encrypted",
            )
        agent = _launch_network(cfg, engine, inherit=inherit)
    thread = threading.Thread(target=_serve, args=(agent,), name="reloadctl-agent", daemon=True)
    agent._thread = thread
    thread.start()
    _register_process_hooks()
    log.info("reloadctl agent listening at %s (pid %d)", agent.address, os.getpid())
    return agent


def _launch_network(cfg: AgentConfig, engine: EngineGate, *, inherit: bool) -> Agent:
    """Build a TCP/TLS agent's server on this thread (rule 5: its errors raise here)."""
    from reloadctl.agent.server import create_server

    address = cfg.listen
    holder: list[Agent] = []
    try:
        server = create_server(cfg, lambda: _service(holder[0]))
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise AgentError(f"cannot listen on {format_address(address)}: {reason}") from None
    try:
        server._listen()
    except OSError as exc:
        server.close()
        raise AgentError(f"cannot listen on {format_address(address)}: {exc.strerror}") from None
    real = replace(address, port=int(server.port))
    if address.port == 0:
        cfg = replace(cfg, listen=real)
    agent = Agent(
        format_address(real), config=cfg, listener=server.listener, engine=engine, inherit=inherit
    )
    holder.append(agent)
    agent._jobs = _jobs_for(agent)
    agent._server = server
    return agent


def _jobs_for(agent: Agent) -> JobManager:
    from reloadctl.agent.jobs import JobManager

    assert agent.config is not None
    return JobManager(allow=agent.config.allow, engine=agent._engine)


def _service(agent: Agent) -> Any:
    from reloadctl.agent.service import AgentService, AgentState

    state = getattr(agent, "_service_state", None)
    if state is None:
        assert agent.config is not None and agent._jobs is not None
        state = AgentState(config=agent.config, jobs=agent._jobs, address=agent.address)
        agent._service_state = state  # type: ignore[attr-defined]
    return AgentService(state)


def _serve(agent: Agent) -> None:
    """The agent thread: wait for a first client, build the server around the bound
    listener (rule 5), then serve."""
    try:
        server = agent._server
        if server is None:
            agent._serving.set()
            _wait_for_first_client(agent)
            with agent._building:
                if agent._stopped:
                    return
                from reloadctl.agent.server import create_server

                assert agent.config is not None and agent._listener is not None
                agent._jobs = _jobs_for(agent)
                built = create_server(
                    agent.config, lambda: _service(agent), listener=agent._listener
                )
                with agent._state_lock:
                    if _is_stopped(agent):  # stop() ran while we built
                        return
                    agent._server = server = built
        agent._serving.set()
        server.start()
    except BaseException:  # the agent thread never prints to stderr
        if not agent._stopped:
            log.exception("reloadctl agent thread stopped")
            agent.stop()
    finally:
        agent._serving.set()  # nobody waits for a thread that is gone


def _is_stopped(agent: Agent) -> bool:
    # A function, so that type checkers do not assume the flag cannot change meanwhile.
    return agent._stopped


def _wait_for_first_client(agent: Agent) -> None:
    # An idle agent costs one thread asleep in poll() (no timeout: it never wakes up) and
    # no rpyc at all: the server is built when a client first connects (or stop() shuts
    # the listener down, which wakes poll() too).
    import select

    assert agent._listener is not None
    poller = select.poll()
    poller.register(agent._listener, select.POLLIN)
    poller.poll()


# -- inheritance and process hooks -----------------------------------------------------------


def _enable_inheritance(inh: Inheritance) -> None:
    """Rule 8: remember ``inh`` for forked children; export it for spawned ones."""
    global _inherit
    _inherit = inh
    env = os.environ
    env[settings.INHERIT_ENV] = "1"
    env[settings.PROGRAM_ENV] = settings.current_program()
    if inh.allow is not None:
        env[settings.ALLOW_ENV] = ",".join(inh.allow)
    if inh.read_only:
        env[settings.READ_ONLY_ENV] = "1"
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if BOOTSTRAP_DIR not in paths:
        env["PYTHONPATH"] = os.pathsep.join([BOOTSTRAP_DIR, *paths])


def start_inherited() -> Agent | None:
    """Start this worker process's agent from the parent's inheritance (rule 8); never raises.

    Returns:
        The agent, or None when inheritance is off, disabled, or the agent cannot start
        (logged).
    """
    inh = _inherit
    if inh is None:
        return None
    try:
        address = format_address(settings.default_listen_address())
        return start(
            address, secret=inh.secret, allow=inh.allow, read_only=inh.read_only, inherit=True
        )
    except Exception as exc:  # noqa: BLE001 - a worker must never fail because of its agent
        log.error("reloadctl agent not started in worker pid %d: %s", os.getpid(), exc)
        return None


_hooks_registered = False
_fork_held: list[Any] = []


_fork_hooks_registered = False
_hooks_lock = threading.Lock()  # not _lock: start() holds that one when it calls us


def _register_process_hooks() -> None:
    global _hooks_registered
    if _hooks_registered:
        return
    _hooks_registered = True
    atexit.register(_stop_at_exit)
    guard_forks()


def guard_forks() -> None:
    """Install the at-fork hooks of rule 7 (idempotent): ``reloadctl.agent`` calls it when
    the engine is first used, ``start()`` when an agent starts."""
    global _fork_hooks_registered
    with _hooks_lock:
        if _fork_hooks_registered or not hasattr(os, "register_at_fork"):
            return
        _fork_hooks_registered = True
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )


def _stop_at_exit() -> None:
    agent = _agent
    if agent is not None:
        try:
            agent.stop()
        except Exception:  # exit must go on
            log.exception("error stopping the agent at exit")


def _before_fork() -> None:
    # Rule 7: never fork while our thread imports rpyc (the child would keep half-imported
    # modules), nor in the middle of a reload (it would keep half-swapped ones); the
    # engine's lock exists only once the engine was loaded.
    agent = _agent
    if agent is not None and agent.running and agent._thread is not threading.current_thread():
        building = agent._building
        if building.acquire(timeout=FORK_WAIT_S):
            building.release()
    history = sys.modules.get("reloadctl.agent.engine.history")
    lock = getattr(history, "LOCK", None)
    if lock is None:
        return
    try:
        if lock.acquire(timeout=FORK_WAIT_S):
            _fork_held.append(lock)
        else:
            log.warning("fork while a reload runs for over %g s: not waiting longer", FORK_WAIT_S)
    except Exception:  # a fork must never fail because of us
        log.debug("could not take the reload lock before fork", exc_info=True)


def _release_fork_locks() -> None:
    while _fork_held:
        with contextlib.suppress(RuntimeError):
            _fork_held.pop().release()


def _after_fork_in_parent() -> None:
    _release_fork_locks()


def _after_fork_in_child() -> None:
    global _agent, _lock, _hooks_lock
    _release_fork_locks()
    # A parent thread may have held our locks at fork time: never reuse them.
    _lock = threading.Lock()
    _hooks_lock = threading.Lock()
    agent = _agent
    _agent = None
    if agent is not None:
        # Not agent.stop(): its lock may have been held by a parent thread at fork time.
        agent._stopped = True
        agent._state_lock = threading.Lock()
        try:
            agent._forget_in_child()
        except Exception:  # a fork must never fail because of us
            log.debug("closing inherited agent sockets failed", exc_info=True)
    if _inherit is not None and not _exec_follows():
        start_inherited()


def _exec_follows() -> bool:
    # subprocess runs the at-fork hooks (only) when it has a preexec_fn to call, in a child
    # that execs another program right after: an agent there would be a stale socket.
    frame: FrameType | None = sys._getframe(2)  # 1: the at-fork hook; 2: the forking code
    for _ in range(4):
        if frame is None:
            return False
        code = frame.f_code
        if code.co_name == "_execute_child" and code.co_filename.endswith("subprocess.py"):
            return True
        frame = frame.f_back
    return False


__all__ = [
    "Agent",
    "Inheritance",
    "current_agent",
    "guard_forks",
    "inheritance",
    "start",
    "start_in_children",
    "start_inherited",
]
