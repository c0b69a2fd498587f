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
    from reloadctl.client.fanout import Transport

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_TIMEOUT",
    "Choice",
    "Output",
    "Settings",
    "default_parallel",
    "tls_ca",
    "tls_cert",
    "tls_key",
]

DEFAULT_TIMEOUT: Final = 30.0
DEFAULT_CONNECT_TIMEOUT: Final = 2.0
#: Seconds ``ps`` waits for each agent unless --timeout says otherwise.
PS_TIMEOUT: Final = 2.0

TLS_CA_ENV: Final = "RELOADCTL_CLIENT_TLS_CA"
TLS_CERT_ENV: Final = "RELOADCTL_CLIENT_TLS_CERT"
TLS_KEY_ENV: Final = "RELOADCTL_CLIENT_TLS_KEY"
#: The names the CLI shared with the agent before each side had its own.
LEGACY_TLS_CA_ENV: Final = "RELOADCTL_TLS_CA"
LEGACY_TLS_CERT_ENV: Final = "RELOADCTL_TLS_CERT"
LEGACY_TLS_KEY_ENV: Final = "RELOADCTL_TLS_KEY"


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
    #: ``tls_ca``/``tls_cert``/``tls_key`` at the CLI boundary.
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


def default_parallel() -> int:
    """``min(32, 4 x CPUs)``: the client is GIL-bound for local targets (agent-fleet F3)."""
    return min(32, 4 * (os.cpu_count() or 1))


Warn = Callable[[str], None]


def _tls_file(
    option: str | os.PathLike[str] | None,
    env_name: str,
    legacy_env: str,
    environ: Mapping[str, str] | None,
    warn: Warn | None,
) -> str | None:
    if option is not None:
        raw = os.fspath(option)
    else:
        env = os.environ if environ is None else environ
        raw = env.get(env_name, "").strip()
        if not raw:
            raw = env.get(legacy_env, "").strip()
            if raw and warn is not None:
                warn(f"{legacy_env} is deprecated: use {env_name} (the agent's is different)")
    return os.path.abspath(os.path.expanduser(raw)) if raw else None


def tls_ca(
    option: str | os.PathLike[str] | None,
    environ: Mapping[str, str] | None = None,
    warn: Warn | None = None,
) -> str | None:
    """``--tls-ca``, then ``RELOADCTL_CLIENT_TLS_CA``, then the deprecated
    ``RELOADCTL_TLS_CA`` (``warn`` is told), then None (the system's CAs)."""
    return _tls_file(option, TLS_CA_ENV, LEGACY_TLS_CA_ENV, environ, warn)


def tls_cert(
    option: str | os.PathLike[str] | None,
    environ: Mapping[str, str] | None = None,
    warn: Warn | None = None,
) -> str | None:
    """``--tls-cert``, then ``RELOADCTL_CLIENT_TLS_CERT``, then the deprecated
    ``RELOADCTL_TLS_CERT`` (``warn`` is told), then None (no client certificate)."""
    return _tls_file(option, TLS_CERT_ENV, LEGACY_TLS_CERT_ENV, environ, warn)


def tls_key(
    option: str | os.PathLike[str] | None,
    environ: Mapping[str, str] | None = None,
    warn: Warn | None = None,
) -> str | None:
    """``--tls-key``, then ``RELOADCTL_CLIENT_TLS_KEY``, then the deprecated
    ``RELOADCTL_TLS_KEY`` (``warn`` is told), then None (the key is in the cert file)."""
    return _tls_file(option, TLS_KEY_ENV, LEGACY_TLS_KEY_ENV, environ, warn)
