"""The one agent of this process: ``start``, ``start_in_children``, ``current_agent``.

Rules:
1. ``start()`` resolves its settings (``agent.config``) and starts at most one agent per
   process (``agent.handle.Agent``). Called while an agent runs, it returns that ``Agent``
   when every setting given explicitly (arguments, and ``RELOADCTL_AGENT_LISTEN`` for the
   address) matches it, so a plain ``start()`` in code run under the launcher gets the
   launcher's agent; a setting that differs raises ``AgentAlreadyRunning`` naming the
   running agent's address. A ``loop`` may be attached to a running agent that has none.
2. The kill switch ``RELOADCTL_AGENT_DISABLE=1`` makes ``start()`` return a disabled
   ``Agent`` (``enabled`` False, ``address`` ""), so host code never breaks because of it.
3. The default listen address is a unix socket in the private directory of
   ``agent.listener``; TCP needs a secret (refused at once otherwise).
4. ``RELOADCTL_AGENT_LISTEN`` is consumed (removed from ``os.environ``) by the process whose
   agent it started, so no child reuses it. Inheritance, fork and exit: ``agent.forks``.
5. ``start_in_children()`` is for pre-fork masters: no agent (no thread) in this process,
   inheritance for its children; on Python 3.12+ a thread in a process that forks makes
   every fork warn that it "may lead to deadlocks".
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence

from reloadctl.agent import config as settings
from reloadctl.agent import forks
from reloadctl.agent.dispatch import EngineGate
from reloadctl.agent.handle import Agent
from reloadctl.agent.listener import remove_stale_own_sockets
from reloadctl.errors import AgentAlreadyRunning
from reloadctl.proto.address import default_socket_dir_path

# typing is never imported at run time (annotations are strings): the host pays for it
# only if it uses it.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import asyncio
    from typing import Any, Final

    from reloadctl.proto.address import Address
    from reloadctl.secrets import Secret

log = logging.getLogger(__name__)
# A library must not make the host's logging print: without this, records of WARNING and
# above would reach the host's stderr through logging.lastResort when the host configured no
# logging. Hosts that configure logging still receive every record through propagation.
logging.getLogger("reloadctl").addHandler(logging.NullHandler())


_lock = threading.Lock()
_agent: Agent | None = None


def current_agent() -> Agent | None:
    """The running agent of this process, if any."""
    agent = _agent
    return agent if agent is not None and agent.running else None


def forget_after_fork() -> None:
    """In a forked child (``agent.forks``): the parent's agent is not ours; fresh lock."""
    global _agent, _lock
    _lock = threading.Lock()  # a parent thread may have held it at fork time
    agent, _agent = _agent, None
    if agent is not None:
        try:
            agent.forget_in_child()
        except Exception:  # a fork must never fail because of us
            log.debug("closing inherited agent sockets failed", exc_info=True)


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
            ``RELOADCTL_AGENT_TLS_CERT``, ``RELOADCTL_AGENT_TLS_KEY``).
        tls_ca: PEM CA bundle; when set, clients must present a certificate it signed
            (default: ``RELOADCTL_AGENT_TLS_CA``). Mutual TLS may replace the secret.
        inherit: worker processes (forked, multiprocessing) get their own agents
            (``agent.forks`` rule 3; default: ``RELOADCTL_AGENT_INHERIT``).
        loop: an asyncio event loop to run every reload and rollback on
            (``agent.dispatch``).

    Raises:
        ConfigError: bad address or settings, TCP without a secret, unsafe socket directory.
        AgentAlreadyRunning: another agent with different settings runs in this process.
        AgentError: the address cannot be bound.
    """
    global _agent
    if settings.disabled():
        log.info("reloadctl agent disabled by %s", settings.DISABLE_ENV)
        return Agent("")
    # the settings build_config takes besides the address, as given (None: not given)
    asked: dict[str, Any] = {
        "secret": secret,
        "secret_file": secret_file,
        "allow": allow,
        "read_only": read_only,
        "tls_cert": tls_cert,
        "tls_key": tls_key,
        "tls_ca": tls_ca,
    }
    with _lock:
        running = current_agent()
        if running is not None:
            differ = _differences(running, listen, asked, inherit=inherit, loop=loop)
            if differ:
                raise AgentAlreadyRunning(
                    f"a reloadctl agent already runs in this process at {running.address} "
                    f"with a different {', '.join(differ)}; stop() it first"
                )
            if loop is not None:
                running.attach_loop(loop)
            return running
        from_env = listen is None and bool(os.environ.get(settings.LISTEN_ENV, "").strip())
        if from_env:
            # Rule 4: the variable was meant for this process; no child may reuse it.
            listen = os.environ.pop(settings.LISTEN_ENV).strip()
        cfg = settings.build_config(listen, **asked)
        wants_children = settings.inherit_mode(inherit)
        _agent = Agent.launch(cfg, EngineGate(loop), inherit=wants_children)
        forks.register_process_hooks()
        if wants_children:
            forks.enable_inheritance(forks.Inheritance(cfg.secret, cfg.allow, cfg.read_only))
        return _agent


def start_in_children(
    *,
    secret: Secret | bytes | str | None = None,
    secret_file: str | os.PathLike[str] | None = None,
    allow: Sequence[str] | str | None = None,
    read_only: bool | None = None,
) -> None:
    """Give every worker process of this one its own agent, and this process none (rule 5).

    For a pre-fork master (gunicorn's arbiter, a forkserver): its workers, forked or
    spawned, each start an agent on their default unix socket with these settings.

    Raises:
        ConfigError: bad settings (checked now, as ``start()`` would).
    """
    if settings.disabled():
        log.info("reloadctl agent disabled by %s", settings.DISABLE_ENV)
        return
    with _lock:
        os.environ.pop(settings.LISTEN_ENV, None)  # rule 4: never an address for children
        cfg = settings.build_config(
            None, secret=secret, secret_file=secret_file, allow=allow, read_only=read_only
        )
        forks.enable_inheritance(forks.Inheritance(cfg.secret, cfg.allow, cfg.read_only))
        forks.register_process_hooks()
        remove_stale_own_sockets(default_socket_dir_path())
    log.info("reloadctl: no agent in this process (pid %d); its workers get one", os.getpid())


TLS_NAMES: Final = ("tls_cert", "tls_key", "tls_ca")


def _differences(
    running: Agent,
    listen: str | None,
    asked: dict[str, Any],
    *,
    inherit: bool | None,
    loop: asyncio.AbstractEventLoop | None,
) -> list[str]:
    """Names of the settings given explicitly (not None) that differ from ``running``."""
    have = running.config
    assert have is not None
    differ: list[str] = []
    explicit = listen is not None or os.environ.get(settings.LISTEN_ENV, "").strip()
    if explicit and not _same_listen(settings.listen_address(listen), have.listen):
        differ.append("listen")
    secret, secret_file = asked["secret"], asked["secret_file"]
    if (secret is not None or secret_file is not None) and settings.agent_secret(
        secret, secret_file
    ) != have.secret:
        differ.append("secret")
    if asked["allow"] is not None and settings.allow_patterns(asked["allow"]) != have.allow:
        differ.append("allow")
    read_only = asked["read_only"]
    if read_only is not None and settings.read_only_mode(read_only) != have.read_only:
        differ.append("read_only")
    if inherit is not None and bool(inherit) != running.inherit:
        differ.append("inherit")
    if loop is not None and running.loop is not None and loop is not running.loop:
        differ.append("loop")
    for name in TLS_NAMES:
        given = asked[name]
        if given is not None and os.path.abspath(os.path.expanduser(given)) != getattr(have, name):
            differ.append(name)
    return differ


def _same_listen(wanted: Address, running: Address) -> bool:
    # "tcp://host:0" asked for any free port: the running agent's real port satisfies it.
    if wanted.scheme != "unix" and wanted.port == 0:
        return (wanted.scheme, wanted.host) == (running.scheme, running.host)
    return wanted == running


__all__ = ["Agent", "current_agent", "forget_after_fork", "start", "start_in_children"]
