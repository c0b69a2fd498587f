"""The CLI's settings: global options merged with a command's own, and one helper per setting
read from the environment (option, then environment, then default).

Environment variables read here (the agent's are in ``reloadctl.agent.config``):

- ``RELOADCTL_CLIENT_TLS_CA``: CA (PEM) that signed the agents' certificates, for
  ``tls://`` targets (default: the system's CAs).
- ``RELOADCTL_CLIENT_TLS_CERT`` / ``RELOADCTL_CLIENT_TLS_KEY``: client certificate and key
  (PEM) for agents that require one.
- The old shared names ``RELOADCTL_TLS_CA``/``_CERT``/``_KEY`` still work here, with the same
  meaning, and one deprecation line each on stderr: to the CLI a CA only decides which
  agents are trusted, so reading the old name cannot weaken anything. (To the agent
  ``RELOADCTL_TLS_CA`` meant "client certificates mandatory": that is why each side now
  has its own names.)

Nothing here imports typer, rpyc or the connection: ``--help`` and ``targets`` load it.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Sequence

    from reloadctl.client.fanout import Transport
    from reloadctl.client.targets import Target

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_TIMEOUT",
    "REMOTE_PARALLEL",
    "TLS_CA",
    "TLS_CERT",
    "TLS_KEY",
    "Choice",
    "Output",
    "Settings",
    "TlsFile",
    "default_parallel",
]

DEFAULT_TIMEOUT: Final = 30.0
DEFAULT_CONNECT_TIMEOUT: Final = 2.0
#: Seconds ``ps`` waits for each agent unless --timeout says otherwise.
PS_TIMEOUT: Final = 2.0


class Output(str, enum.Enum):
    """Output formats (``-o``)."""

    table = "table"
    json = "json"
    ndjson = "ndjson"


@dataclass(frozen=True, slots=True)
class Settings:
    """Global options merged with a command's own (the command's value wins)."""

    output: Output | None = None
    quiet: bool = False
    verbose: int = 0
    timeout: float | None = None
    connect_timeout: float | None = None
    parallel: int | None = None
    deadline: float | None = None
    secret_file: Path | None = None
    inventory: Path | None = None
    #: TLS files for ``tls://`` targets (absolute paths; None: not given), read once by
    #: ``TLS_CA``/``TLS_CERT``/``TLS_KEY`` at the CLI boundary.
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    #: The per-target call; None: the real connection. Not an option: a test runs the app
    #: with ``app(args, obj=Settings(transport=fake))`` (the root callback starts from it).
    transport: Transport | None = None

    def merged(self, **values: object) -> Settings:
        """Override with every value that was given (not None/False/0)."""
        given = {
            k: v
            for k, v in values.items()
            if v is not None and v is not False and not (k == "verbose" and v == 0)
        }
        if "verbose" in given:
            given["verbose"] = self.verbose + int(given["verbose"])  # type: ignore[call-overload]
        return replace(self, **given)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Choice:
    """The selection options as given to a command (``-H``, ``-g``, ``--all``, ``--local``)."""

    hosts: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    all_groups: bool = False
    local: bool = False


#: Default pool when a target is remote (tcp/tls): a remote reload waits on round trips,
#: not on the client's CPU, so many can be in flight (one socket each).
REMOTE_PARALLEL: Final = 64


def default_parallel(targets: Sequence[Target] = ()) -> int:
    """``min(32, 4 x CPUs)`` for local agents: the client is GIL-bound for them (agent-fleet
    F3); ``REMOTE_PARALLEL`` once a target is tcp:// or tls:// (bound by latency)."""
    if any(t.address.startswith(("tcp://", "tls://")) for t in targets):
        return REMOTE_PARALLEL
    return min(32, 4 * (os.cpu_count() or 1))


Warn = Callable[[str], None]


class TlsFile:
    """One TLS file setting: its option, then its variable, then the old shared name (with
    one deprecation line to ``warn``), then None. A path comes back absolute."""

    # A plain slotted class, not a dataclass: building a dataclass costs ~0.35 ms, and every
    # CLI start-up (``--help`` included) builds this one.
    __slots__ = ("env", "legacy_env")

    def __init__(self, env: str, legacy_env: str) -> None:
        self.env = env
        self.legacy_env = legacy_env

    def read(
        self,
        option: str | os.PathLike[str] | None,
        environ: Mapping[str, str] | None = None,
        warn: Warn | None = None,
    ) -> str | None:
        """The file this setting names, or None."""
        if option is not None:
            raw = os.fspath(option)
        else:
            env = os.environ if environ is None else environ
            raw = env.get(self.env, "").strip()
            if not raw:
                raw = env.get(self.legacy_env, "").strip()
                if raw and warn is not None:
                    agents = self.env.replace("_CLIENT_", "_AGENT_")
                    warn(f"{self.legacy_env} is deprecated: use {self.env} (agents: {agents})")
        return os.path.abspath(os.path.expanduser(raw)) if raw else None


#: ``--tls-ca``: the CA that signed the agents' certificates (None: the system's CAs).
TLS_CA: Final = TlsFile("RELOADCTL_CLIENT_TLS_CA", "RELOADCTL_TLS_CA")
#: ``--tls-cert``: the client certificate (None: none).
TLS_CERT: Final = TlsFile("RELOADCTL_CLIENT_TLS_CERT", "RELOADCTL_TLS_CERT")
#: ``--tls-key``: the key of the client certificate (None: it is in the certificate file).
TLS_KEY: Final = TlsFile("RELOADCTL_CLIENT_TLS_KEY", "RELOADCTL_TLS_KEY")
