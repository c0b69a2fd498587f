"""The ``Agent``: one running agent of this process, its thread, its server and its stop.

Rules:
1. ``Agent.launch`` binds the listener and builds the TLS context on the caller's thread
   (errors raise at once, ``address`` is final, clients may connect at once), then starts
   the agent thread (``reloadctl-agent``) and returns.
2. The agent thread sleeps in ``poll()`` on the listener until a first client connects,
   and only then imports rpyc and builds the server (``agent.server``), holding
   ``building`` meanwhile (a fork waits for it); the engine is imported by the first job
   (``status`` does not need it before).
3. All agent threads are daemon threads; ``stop()`` waits for them only a bounded time, so
   it never delays the host's shutdown by more than about a second, and unlinks our
   socket file.
4. In a forked child the parent's agent is not running: ``forget_in_child`` closes the
   child's copies of the inherited sockets (never shutting them down: the parent keeps
   serving them) and takes no lock a parent thread may have held at fork time.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from dataclasses import replace

from reloadctl.agent import listener as listening
from reloadctl.agent.dispatch import EngineGate
from reloadctl.errors import AgentError
from reloadctl.proto.address import format_address

# typing is never imported at run time (annotations are strings): the host pays for it
# only if it uses it.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import asyncio
    import ssl
    from typing import Any, Final

    from reloadctl.agent.config import AgentConfig
    from reloadctl.agent.jobs import JobManager
    from reloadctl.agent.server import AgentServer
    from reloadctl.proto.auth import Session

log = logging.getLogger(__name__)

_STOP_JOIN_S: Final = 1.0


class Agent:
    """A handle on this process's agent.

    Attributes:
        address: where it listens, in a form the CLI accepts (``""`` when disabled).
        enabled: False for the disabled agent of the kill switch.
        inherit: whether this process's worker processes get their own agents.
        config: its settings (None when disabled).
    """

    def __init__(
        self,
        address: str,
        *,
        config: AgentConfig | None = None,
        listener: listening.Listener | None = None,
        engine: EngineGate | None = None,
        inherit: bool = False,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.address = address
        self.config = config
        self.enabled = listener is not None
        self.inherit = inherit
        #: Held by the agent thread while it imports and builds the server (rule 2).
        self.building = threading.Lock()
        self._listener = listener
        self._tls = tls
        self._engine = engine if engine is not None else EngineGate()
        self._server: AgentServer | None = None
        self._jobs: JobManager | None = None
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._stopped = listener is None
        self._serving = threading.Event()
        self._state_lock = threading.Lock()

    @classmethod
    def launch(cls, config: AgentConfig, engine: EngineGate, *, inherit: bool) -> Agent:
        """Listen on ``config.listen`` and start the agent thread (rule 1).

        Raises:
            ConfigError: the socket directory is missing or not private.
            AgentError: the address cannot be bound, or the TLS files are unusable.
        """
        tls = None
        if config.listen.scheme == "tls":
            from reloadctl.transport import server_tls_context

            assert config.tls_cert is not None and config.tls_key is not None
            try:
                tls = server_tls_context(config.tls_cert, config.tls_key, config.tls_ca)
            except (OSError, ValueError) as exc:
                reason = getattr(exc, "strerror", None) or str(exc)
                raise AgentError(
                    f"cannot listen on {format_address(config.listen)}: {reason}"
                ) from None
        bound = listening.listen(config.listen)
        if bound.address != config.listen:  # port 0: the real port from now on
            config = replace(config, listen=bound.address)
        agent = cls(
            format_address(bound.address),
            config=config,
            listener=bound,
            engine=engine,
            inherit=inherit,
            tls=tls,
        )
        agent._thread = threading.Thread(target=agent._run, name="reloadctl-agent", daemon=True)
        agent._thread.start()
        log.info("reloadctl agent listening at %s (pid %d)", agent.address, os.getpid())
        return agent

    def __repr__(self) -> str:
        state = "running" if self.running else ("disabled" if not self.enabled else "stopped")
        return f"<reloadctl Agent {self.address or '-'} {state}>"

    @property
    def running(self) -> bool:
        """True while this process's agent serves (False after stop, and in a forked child)."""
        return not self._stopped and self._pid == os.getpid()

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop engine calls run on, if any."""
        return self._engine.loop

    def attach_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Run every later reload and rollback on ``loop``."""
        self._engine.loop = loop

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
            self._close_inherited()
            return
        try:
            if server is not None:
                server.close()
            elif self._listener is not None:
                # Wakes the thread's poll(); it sees _stopped and builds no server.
                with contextlib.suppress(OSError):
                    self._listener.sock.shutdown(socket.SHUT_RDWR)
                self._listener.sock.close()
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
        if self._listener is not None and self._listener.address.scheme == "unix":
            listening.unlink_if_ours(self._listener.address.path, self._listener.inode)
        log.info("reloadctl agent at %s stopped", self.address)

    # -- fork (rule 4) ------------------------------------------------------------------------

    def wait_built(self, timeout: float) -> None:
        """Before a fork: wait (at most ``timeout`` s) while the agent thread imports and
        builds its server, so that no child keeps half-imported modules."""
        if self._thread is threading.current_thread() or not self.running:
            return
        if self.building.acquire(timeout=timeout):
            self.building.release()

    def forget_in_child(self) -> None:
        """In a forked child: this agent is the parent's; close our copies of its sockets."""
        self._stopped = True
        # a parent thread may have held these at fork time: never reuse them
        self._state_lock = threading.Lock()
        self.building = threading.Lock()
        self._close_inherited()

    def _close_inherited(self) -> None:
        # close() only; shutdown() would stop the parent's sockets too
        if self._server is not None:
            self._server.abandon()
        elif self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.sock.close()

    # -- the agent thread (rule 2) ------------------------------------------------------------

    def _run(self) -> None:
        try:
            assert self._listener is not None
            self._serving.set()
            listening.wait_for_client(self._listener.sock)
            with self.building:
                if self._stopped:
                    return
                built = self._build_server()
                with self._state_lock:
                    if self._is_stopped():  # stop() ran while we built
                        built.close()
                        return
                    self._server = built
            built.serve_forever()
        except BaseException:  # the agent thread never prints to stderr
            if not self._stopped:
                log.exception("reloadctl agent thread stopped")
                self.stop()
        finally:
            self._serving.set()  # nobody waits for a thread that is gone

    def _is_stopped(self) -> bool:
        # A method, so that type checkers do not assume the flag cannot change meanwhile.
        return self._stopped

    def _build_server(self) -> AgentServer:
        from reloadctl.agent.jobs import JobManager
        from reloadctl.agent.server import AgentServer
        from reloadctl.agent.service import AgentService, AgentState

        assert self.config is not None and self._listener is not None
        self._jobs = JobManager(allow=self.config.allow, engine=self._engine)
        state = AgentState(config=self.config, jobs=self._jobs, address=self.address)

        def service(session: Session, peer: str) -> Any:
            return AgentService(state, session, peer)

        return AgentServer(self.config, self._listener.sock, service, self._tls)
