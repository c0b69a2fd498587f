"""Agent addresses (parse and format) and the default local socket directory and file names.

Rules:
1. Accepted forms: ``unix:///abs/path.sock``, ``tcp://host[:port]``, ``tls://host[:port]``,
   bare ``host`` or ``host:port`` (tcp), IPv6 in brackets (``[::1]:7878``,
   ``tcp://[::1]``). A missing port is ``DEFAULT_PORT``.
2. ``format_address(parse_address(s))`` is the canonical form (``tcp://h:p``,
   ``unix:///p``); parsing the canonical form gives the same ``Address``.
3. Anything else raises ``AddressError`` with a one-line message quoting the input.
4. The default socket directory is ``$XDG_RUNTIME_DIR/reloadctl`` when that variable is set
   (and absolute), else ``<tempdir>/reloadctl-<uid>``. Socket files are named
   ``<prog>-<pid>.sock``; ``prog`` is reduced to ``[A-Za-z0-9_.]`` characters.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from reloadctl.errors import AddressError

# typing is never imported at run time (annotations are strings): the host pays for it
# only if it uses it.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Final

# ipaddress and pathlib are imported where they are used (tempfile never, see _temp_dir):
# this module is loaded into every process that embeds the agent.

DEFAULT_PORT: Final = 7878
SCHEMES: Final = ("unix", "tcp", "tls")
SOCKET_SUFFIX: Final = ".sock"
#: Linux ``sun_path`` holds 108 bytes including the terminating NUL.
MAX_UNIX_PATH: Final = 107
_MAX_PROG: Final = 40

_HOST_RE: Final = re.compile(r"^[A-Za-z0-9_.\-]+$")
_PORT_RE: Final = re.compile(r"^[0-9]{1,5}$")
_PROG_BAD: Final = re.compile(r"[^A-Za-z0-9_.]+")
_SOCKET_NAME_RE: Final = re.compile(r"^(?P<prog>[A-Za-z0-9_.]+)-(?P<pid>[1-9][0-9]{0,9})\.sock$")


@dataclass(frozen=True, slots=True)
class Address:
    """A parsed agent address: ``path`` for unix, ``host``/``port`` for tcp and tls."""

    scheme: str
    host: str = ""
    port: int = 0
    path: str = ""

    def __str__(self) -> str:
        return format_address(self)

    @property
    def is_unix(self) -> bool:
        """True for a unix-socket address."""
        return self.scheme == "unix"


def format_address(addr: Address) -> str:
    """Return the canonical string form of ``addr`` (rule 2)."""
    if addr.scheme == "unix":
        return f"unix://{addr.path}"
    host = f"[{addr.host}]" if ":" in addr.host else addr.host
    return f"{addr.scheme}://{host}:{addr.port}"


def _parse_port(text: str, original: str, listen: bool) -> int:
    if not _PORT_RE.match(text):
        raise AddressError(f"invalid port {text!r} in address {original!r}")
    port = int(text)
    if port == 0 and listen:
        return 0
    if not 1 <= port <= 65535:
        raise AddressError(f"port {port} out of range 1-65535 in address {original!r}")
    return port


def _parse_hostport(text: str, original: str, listen: bool) -> tuple[str, int]:
    if not text:
        raise AddressError(f"missing host in address {original!r}")
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise AddressError(f"unclosed '[' in address {original!r}")
        host, rest = text[1:end], text[end + 1 :]
        import ipaddress

        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise AddressError(f"invalid IPv6 address {host!r} in {original!r}") from None
        if not rest:
            return host, DEFAULT_PORT
        if not rest.startswith(":"):
            raise AddressError(f"unexpected {rest!r} after ']' in address {original!r}")
        return host, _parse_port(rest[1:], original, listen)
    if text.count(":") > 1:
        raise AddressError(
            f"ambiguous address {original!r}: write IPv6 addresses in brackets, e.g. [::1]:7878"
        )
    host, sep, port_text = text.partition(":")
    if not host:
        raise AddressError(f"missing host in address {original!r}")
    if not _HOST_RE.match(host) or len(host) > 253:
        raise AddressError(f"invalid host {host!r} in address {original!r}")
    return host, (_parse_port(port_text, original, listen) if sep else DEFAULT_PORT)


def parse_address(text: str, *, listen: bool = False) -> Address:
    """Parse an agent address by rule 1; ``listen=True`` also accepts port 0 (any free port).

    Raises:
        AddressError: the text is not one of the accepted forms.
    """
    if not isinstance(text, str):
        raise AddressError(f"address must be a string, not {type(text).__name__}")
    original = text
    text = text.strip()
    if not text:
        raise AddressError("empty address")
    if " " in text or not text.isprintable():  # any whitespace, control or format char
        raise AddressError(f"address {original!r} contains whitespace or control characters")
    scheme, sep, rest = text.partition("://")
    if not sep:
        if "/" in text:
            raise AddressError(
                f"cannot parse address {original!r}: use unix:///path.sock for a socket file"
            )
        host, port = _parse_hostport(text, original, listen)
        return Address("tcp", host=host, port=port)
    scheme = scheme.lower()
    if scheme not in SCHEMES:
        raise AddressError(
            f"unknown scheme {scheme!r} in address {original!r} (expected unix, tcp or tls)"
        )
    if scheme == "unix":
        if not rest.startswith("/"):
            raise AddressError(
                f"unix address {original!r} needs an absolute path: unix:///path/to/agent.sock"
            )
        if "\0" in rest or len(os.fsencode(rest)) > MAX_UNIX_PATH:
            raise AddressError(
                f"unix socket path in {original!r} is longer than {MAX_UNIX_PATH} bytes"
            )
        return Address("unix", path=rest)
    if "/" in rest or "@" in rest or "?" in rest or "#" in rest:
        raise AddressError(f"cannot parse address {original!r}: expected {scheme}://host:port")
    host, port = _parse_hostport(rest, original, listen)
    return Address(scheme, host=host, port=port)


def is_loopback_host(host: str) -> bool:
    """True when ``host`` is ``localhost`` or a loopback IP literal (no DNS lookup)."""
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def default_socket_dir(environ: Mapping[str, str] | None = None, *, uid: int | None = None) -> Path:
    """Return the directory for this user's agent sockets (rule 4); nothing is created."""
    from pathlib import Path

    return Path(default_socket_dir_path(environ, uid=uid))


def default_socket_dir_path(
    environ: Mapping[str, str] | None = None, *, uid: int | None = None
) -> str:
    """``default_socket_dir`` as a ``str`` (without importing pathlib)."""
    env = os.environ if environ is None else environ
    runtime = env.get("XDG_RUNTIME_DIR", "")
    if runtime and os.path.isabs(runtime):
        return os.path.join(os.path.normpath(runtime), "reloadctl")
    name = f"reloadctl-{os.getuid() if uid is None else uid}"
    return os.path.join(_temp_dir(env), name)


def _temp_dir(env: Mapping[str, str]) -> str:
    """The directory ``tempfile.gettempdir()`` picks, without importing tempfile.

    tempfile pulls shutil, bz2 and lzma into the host (0.4 MiB of RSS in every agent). Same
    candidates, same order: ``$TMPDIR``, ``$TEMP``, ``$TMP``, ``/tmp``, ``/var/tmp``,
    ``/usr/tmp``, then the working directory; the first that is a directory wins.
    (gettempdir also skips one it cannot write to; here the agent reports that when it
    creates its socket directory.)
    """
    for var in ("TMPDIR", "TEMP", "TMP"):
        value = env.get(var, "")
        if value and os.path.isdir(value):
            return os.path.abspath(value)
    for candidate in ("/tmp", "/var/tmp", "/usr/tmp"):  # noqa: S108 - only a parent dir
        if os.path.isdir(candidate):
            return candidate
    return os.getcwd()


def program_name(raw: str) -> str:
    """Reduce a script path or module name to the ``prog`` part of a socket name (rule 4)."""
    base = os.path.basename(raw.rstrip("/")) or "python"
    if base.endswith(".py"):
        base = base[:-3]
    cleaned = _PROG_BAD.sub("_", base).strip("_.")[:_MAX_PROG]
    return cleaned or "python"


def socket_name(prog: str, pid: int) -> str:
    """Return ``<prog>-<pid>.sock`` for a program name (cleaned by ``program_name``)."""
    if pid <= 0:
        raise ValueError(f"pid must be positive, not {pid}")
    return f"{program_name(prog)}-{pid}{SOCKET_SUFFIX}"


def parse_socket_name(name: str) -> tuple[str, int] | None:
    """Return ``(prog, pid)`` for a file named ``<prog>-<pid>.sock``, else ``None``."""
    m = _SOCKET_NAME_RE.match(name)
    if m is None:
        return None
    return m.group("prog"), int(m.group("pid"))
