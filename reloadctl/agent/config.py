"""Agent settings: one small helper per setting (argument, then environment, then default).

Environment variables (all optional):

- ``RELOADCTL_AGENT_LISTEN``: listen address when ``start(listen=None)``; ``1`` (or empty)
  means the default unix socket. Also activates ``reloadctl.agent.auto``. The process whose
  agent starts from it removes it from ``os.environ`` (``agent.lifecycle`` rule 4).
- ``RELOADCTL_AGENT_ALLOW``: comma-separated fnmatch patterns of reloadable modules.
- ``RELOADCTL_AGENT_READ_ONLY``: ``1`` refuses reload and rollback (status still works).
- ``RELOADCTL_AGENT_DISABLE``: ``1`` is the kill switch: ``start()`` returns a disabled
  agent that listens nowhere.
- ``RELOADCTL_AGENT_MAX_CONNECTIONS``: concurrent connections (default 16).
- ``RELOADCTL_AGENT_INHERIT``: ``1`` gives the program's worker processes (forked children,
  multiprocessing children) their own agents; see ``agent.forks`` rule 3.
- ``RELOADCTL_AGENT_PROGRAM``: set by inheritance for spawned children: the ``prog`` of
  their socket names while their own ``sys.argv`` says only ``-c``.
- ``RELOADCTL_SECRET_FILE`` / ``RELOADCTL_SECRET``: see ``reloadctl.secrets``.
- ``RELOADCTL_AGENT_TLS_CERT`` / ``RELOADCTL_AGENT_TLS_KEY``: the agent's certificate chain
  and key (PEM files) for ``tls://``; ``RELOADCTL_AGENT_TLS_CA``: the CA that signs client
  certificates (then every client must present one). The CLI's own TLS files are
  ``RELOADCTL_CLIENT_TLS_*``, so one shared environment cannot change an agent's policy.
  The old ``RELOADCTL_TLS_CERT``/``_KEY`` still work (one deprecation warning in the log);
  the old ``RELOADCTL_TLS_CA`` meant "the agents' CA" to the CLI, so an agent that finds it
  without ``RELOADCTL_AGENT_TLS_CA`` refuses to guess and says which name to set.

``tls://`` needs a certificate and key. Without a secret it also needs ``tls_ca``: mutual
TLS then replaces the secret (the client proves itself with its certificate). With a
secret, the HMAC handshake and per-message MACs run inside TLS as well.

Nothing here evaluates a variable: values are parsed as fixed formats only.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from reloadctl.errors import ConfigError, SecretError
from reloadctl.proto.address import (
    Address,
    default_socket_dir_path,
    parse_address,
    program_name,
    socket_name,
)

# typing is never imported at run time (annotations are strings): the host pays for it
# only if it uses it.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

    from reloadctl.secrets import Secret

LISTEN_ENV: Final = "RELOADCTL_AGENT_LISTEN"
ALLOW_ENV: Final = "RELOADCTL_AGENT_ALLOW"
READ_ONLY_ENV: Final = "RELOADCTL_AGENT_READ_ONLY"
DISABLE_ENV: Final = "RELOADCTL_AGENT_DISABLE"
MAX_CONNECTIONS_ENV: Final = "RELOADCTL_AGENT_MAX_CONNECTIONS"
INHERIT_ENV: Final = "RELOADCTL_AGENT_INHERIT"
PROGRAM_ENV: Final = "RELOADCTL_AGENT_PROGRAM"
TLS_CERT_ENV: Final = "RELOADCTL_AGENT_TLS_CERT"
TLS_KEY_ENV: Final = "RELOADCTL_AGENT_TLS_KEY"
TLS_CA_ENV: Final = "RELOADCTL_AGENT_TLS_CA"
#: The names agent and CLI used to share, before each side had its own.
LEGACY_TLS_CERT_ENV: Final = "RELOADCTL_TLS_CERT"
LEGACY_TLS_KEY_ENV: Final = "RELOADCTL_TLS_KEY"
LEGACY_TLS_CA_ENV: Final = "RELOADCTL_TLS_CA"

DEFAULT_MAX_CONNECTIONS: Final = 16
#: Connections still in the handshake; the rest of the cap stays free for real clients.
DEFAULT_MAX_HANDSHAKES: Final = 8
#: Seconds a peer has to complete the whole pre-auth handshake.
HANDSHAKE_TIMEOUT_S: Final = 3.0

_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"", "0", "false", "no", "off"})


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """Everything one agent runs with; two configs compare equal when the agent is the same."""

    listen: Address
    secret: Secret | None
    allow: tuple[str, ...] | None
    read_only: bool
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_handshakes: int = DEFAULT_MAX_HANDSHAKES
    handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S
    #: PEM paths for ``tls://`` (``tls_ca``: require client certificates signed by it).
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None


def _env(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def env_flag(name: str, environ: Mapping[str, str] | None = None) -> bool:
    """Read a boolean variable: 1/true/yes/on or 0/false/no/off (case-insensitive)."""
    raw = _env(environ).get(name, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ConfigError(f"{name}={raw[:20]!r} is not a boolean (use 1 or 0)")


def disabled(environ: Mapping[str, str] | None = None) -> bool:
    """True when the kill switch ``RELOADCTL_AGENT_DISABLE`` is on (bad values count as on)."""
    try:
        return env_flag(DISABLE_ENV, environ)
    except ConfigError:
        # A kill switch set to anything unexpected should still kill: fail safe.
        return True


def current_program() -> str:
    """The ``prog`` of this process's socket name: the script or ``-m`` module name."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    name = getattr(spec, "name", None)
    # Under ``python -m reloadctl.agent`` our own launcher is __main__ until the program
    # runs; the launcher has already put the program's name in sys.argv[0] then.
    if isinstance(name, str) and name and not name.startswith("reloadctl."):
        return program_name(name.removesuffix(".__main__"))
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else "python"
    if argv0 == "-c":
        # A spawned multiprocessing child (``python -c 'from multiprocessing...'``): the
        # program it works for, as inheritance exported it.
        return program_name(os.environ.get(PROGRAM_ENV, "") or "python")
    if os.path.basename(argv0) == "__main__.py":  # ``python -m pkg`` seen from a child
        return program_name(os.path.basename(os.path.dirname(os.path.abspath(argv0))))
    return program_name(argv0)


def default_listen_address(
    environ: Mapping[str, str] | None = None, *, pid: int | None = None
) -> Address:
    """``unix://<socket dir>/<prog>-<pid>.sock`` for this process."""
    directory = default_socket_dir_path(environ)
    path = os.path.join(directory, socket_name(current_program(), pid or os.getpid()))
    return parse_address(f"unix://{path}")


def listen_address(listen: str | None, environ: Mapping[str, str] | None = None) -> Address:
    """Argument, then ``RELOADCTL_AGENT_LISTEN`` (``1`` = default), then the default socket."""
    raw = listen if listen is not None else _env(environ).get(LISTEN_ENV, "")
    raw = raw.strip()
    if raw in ("", "1"):
        return default_listen_address(environ)
    return parse_address(raw, listen=True)


def allow_patterns(
    allow: Sequence[str] | str | None, environ: Mapping[str, str] | None = None
) -> tuple[str, ...] | None:
    """Argument, then ``RELOADCTL_AGENT_ALLOW`` (comma-separated), then ``None`` (allow all)."""
    if isinstance(allow, str):
        allow = [allow]
    if allow is None:
        raw = _env(environ).get(ALLOW_ENV, "")
        if not raw.strip():
            return None
        allow = raw.split(",")
    patterns = tuple(p.strip() for p in allow if p.strip())
    if not patterns:
        raise ConfigError("the allow list is empty: give at least one module pattern")
    return patterns


def inherit_mode(inherit: bool | None, environ: Mapping[str, str] | None = None) -> bool:
    """Argument, then ``RELOADCTL_AGENT_INHERIT``, then False."""
    if inherit is not None:
        return bool(inherit)
    return env_flag(INHERIT_ENV, environ)


def read_only_mode(read_only: bool | None, environ: Mapping[str, str] | None = None) -> bool:
    """Argument, then ``RELOADCTL_AGENT_READ_ONLY``, then False."""
    if read_only is not None:
        return bool(read_only)
    return env_flag(READ_ONLY_ENV, environ)


def max_connections(environ: Mapping[str, str] | None = None) -> int:
    """``RELOADCTL_AGENT_MAX_CONNECTIONS`` (1..1024), else the default."""
    raw = _env(environ).get(MAX_CONNECTIONS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_CONNECTIONS
    if not raw.isdigit() or not 1 <= int(raw) <= 1024:
        raise ConfigError(f"{MAX_CONNECTIONS_ENV}={raw[:20]!r} must be a number in 1..1024")
    return int(raw)


def tls_file(
    value: str | os.PathLike[str] | None,
    env_name: str,
    environ: Mapping[str, str] | None = None,
    legacy_env: str | None = None,
) -> str | None:
    """Argument, then the variable ``env_name``, then the deprecated ``legacy_env`` (with a
    warning in the log), then None; the file must be readable.

    Raises:
        ConfigError: the file named does not exist or cannot be read.
    """
    env = _env(environ)
    source = env_name
    raw = os.fspath(value) if value is not None else env.get(env_name, "").strip()
    if not raw and value is None and legacy_env is not None:
        raw = env.get(legacy_env, "").strip()
        if raw:
            source = legacy_env
            _deprecated(legacy_env, env_name)
    if not raw:
        return None
    path = os.path.abspath(os.path.expanduser(raw))
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        raise ConfigError(f"TLS file {path} (from {source} or argument) is not a readable file")
    return path


def tls_ca_file(
    value: str | os.PathLike[str] | None, environ: Mapping[str, str] | None = None
) -> str | None:
    """Argument, then ``RELOADCTL_AGENT_TLS_CA``, then None (client certificates optional).

    Raises:
        ConfigError: the file is unreadable, or only the old ``RELOADCTL_TLS_CA`` is set: to
            the CLI that name meant the CA of the agents, so an agent cannot tell whether it
            was meant to make client certificates mandatory.
    """
    path = tls_file(value, TLS_CA_ENV, environ)
    if path is None and _env(environ).get(LEGACY_TLS_CA_ENV, "").strip():
        raise ConfigError(
            f"{LEGACY_TLS_CA_ENV} is no longer read by the agent (the CLI read it as the "
            f"agents' CA): set {TLS_CA_ENV} to require client certificates, or unset it"
        )
    return path


def _deprecated(old: str, new: str) -> None:
    import logging  # only on this path: the host may not use logging at all

    logging.getLogger(__name__).warning("%s is deprecated: use %s", old, new)


def agent_secret(
    secret: Secret | bytes | str | None,
    secret_file: str | os.PathLike[str] | None,
    environ: Mapping[str, str] | None = None,
) -> Secret | None:
    """Argument, then secret file, then ``RELOADCTL_SECRET_FILE``, then ``RELOADCTL_SECRET``."""
    if secret is None and secret_file is None:
        env = _env(environ)
        if "RELOADCTL_SECRET_FILE" not in env and "RELOADCTL_SECRET" not in env:
            return None  # what load_secret answers, without importing it (and pathlib)
    from reloadctl.secrets import load_secret

    return load_secret(secret, secret_file=secret_file, environ=_env(environ))


def build_config(
    listen: str | None = None,
    *,
    secret: Secret | bytes | str | None = None,
    secret_file: str | os.PathLike[str] | None = None,
    allow: Sequence[str] | str | None = None,
    read_only: bool | None = None,
    environ: Mapping[str, str] | None = None,
    tls_cert: str | os.PathLike[str] | None = None,
    tls_key: str | os.PathLike[str] | None = None,
    tls_ca: str | os.PathLike[str] | None = None,
) -> AgentConfig:
    """Resolve every setting; refuse TCP without a secret, TLS without its files.

    Raises:
        ConfigError: a bad address, allow list or variable (``AddressError``,
            ``SecretError`` are subclasses).
    """
    address = listen_address(listen, environ)
    the_secret = agent_secret(secret, secret_file, environ)
    cert = key = ca = None
    if address.scheme == "tls":
        cert = tls_file(tls_cert, TLS_CERT_ENV, environ, LEGACY_TLS_CERT_ENV)
        key = tls_file(tls_key, TLS_KEY_ENV, environ, LEGACY_TLS_KEY_ENV)
        ca = tls_ca_file(tls_ca, environ)
        if cert is None or key is None:
            raise ConfigError(
                f"listening on {address} needs a certificate and its key: set "
                f"{TLS_CERT_ENV} and {TLS_KEY_ENV} (or pass tls_cert=..., tls_key=...)"
            )
        if os.stat(key).st_mode & 0o004:  # world-readable
            raise ConfigError(
                f"the TLS key {key} is readable by every user: chmod o-r {key} (600 or 640)"
            )
        if the_secret is None and ca is None:
            raise SecretError(
                f"refusing to listen on {address} without client authentication: set "
                f"{TLS_CA_ENV} to require client certificates, or RELOADCTL_SECRET_FILE"
            )
    if address.scheme == "tcp" and the_secret is None:
        raise SecretError(
            f"refusing to listen on {address} without a secret: set RELOADCTL_SECRET_FILE "
            "to a chmod 600 file (or pass secret_file=...), or listen on a unix socket"
        )
    return AgentConfig(
        listen=address,
        secret=the_secret,
        allow=allow_patterns(allow, environ),
        read_only=read_only_mode(read_only, environ),
        max_connections=max_connections(environ),
        tls_cert=cert,
        tls_key=key,
        tls_ca=ca,
    )


def ensure_private_dir(path: str | os.PathLike[str]) -> None:
    """Create ``path`` as a 0700 directory, or check that an existing one is private.

    Raises:
        ConfigError: it exists but is a symlink, not a directory, owned by another user, or
            accessible by group/others.
    """
    import stat

    path = os.fspath(path)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), 0o700, exist_ok=True)
        os.makedirs(path, 0o700, exist_ok=True)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"socket directory {path} is not a directory (or is a symlink)")
    if st.st_uid != os.getuid():
        raise ConfigError(
            f"socket directory {path} belongs to uid {st.st_uid}, not to us "
            f"(uid {os.getuid()}); refusing to use it"
        )
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise ConfigError(
            f"socket directory {path} has mode {stat.S_IMODE(st.st_mode):04o}; "
            f"it must be private: chmod 700 {path}"
        )
