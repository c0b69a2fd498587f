"""The one exception hierarchy of reloadctl: every error we raise derives from ReloadctlError.

Third-party exceptions (rpyc, msgpack, socket, ssl, tomllib) are translated at the boundary
that owns the dependency (``raise X(...) from exc``) and never escape into callers. Where a
caller would naturally catch a builtin, our class subclasses it too (msgpack-python's habit).
"""

from __future__ import annotations


class ReloadctlError(Exception):
    """Root of every error reloadctl raises."""


# -- protocol (h11's split: our bug vs. the peer's garbage) -------------------------------


class ProtocolError(ReloadctlError, ValueError):
    """A message could not be encoded or decoded."""


class LocalProtocolError(ProtocolError):
    """We tried to send something the protocol does not allow: a bug on our side."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol does not allow: garbage, wrong version, too big."""


class AuthenticationError(ReloadctlError):
    """A handshake or a message MAC did not verify: wrong secret, tampering or replay."""


# -- configuration and user input --------------------------------------------------------


class ConfigError(ReloadctlError, ValueError):
    """A setting, address, secret source or inventory is invalid."""


class AddressError(ConfigError):
    """A target or listen address cannot be parsed or resolved."""


class SecretError(ConfigError):
    """A secret is missing where required, or its file is unreadable or too permissive."""


class InventoryError(ConfigError):
    """The inventory file is malformed or names an unknown group."""


class UsageError(ConfigError):
    """The command line asks for something that cannot be done (the CLI exits 2)."""


# -- agent side ---------------------------------------------------------------------------


class AgentError(ReloadctlError):
    """The in-process agent cannot do what was asked (start, listen, serve)."""


class AgentAlreadyRunning(AgentError):
    """A second, different agent was requested in a process that already runs one."""


# -- client side: how one target ended, when it did not answer normally -----------------


class TargetError(ReloadctlError):
    """One target did not complete the request; the subclass says how."""


class TargetUnreachable(TargetError, ConnectionError):
    """The target could not be connected to, or the connection broke before an answer."""


class TargetTimeout(TargetError, TimeoutError):
    """The target accepted the request but did not finish before the deadline."""


class TargetAuthFailed(TargetError):
    """The target rejected our credentials, or could not prove it knows the secret."""


class TargetRefused(TargetError):
    """The agent answered with an ``ErrorReply`` (read-only, forbidden module, busy, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
