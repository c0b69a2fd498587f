"""Local discovery: the agents of this user, found by their sockets in the runtime directory.

Rules:
1. The directory is ``proto.address.default_socket_dir()``; a socket is named
   ``<prog>-<pid>.sock``. Files with other names, and non-sockets, are ignored.
2. A socket whose process is gone is stale: it is removed when this user owns it, and it is
   never reported. "Gone" means no such pid, a zombie, a pid now owned by another user, or
   a pid whose process started after the socket was made (the pid was reused).
3. A socket whose process is alive is always reported, answering or not: whether it
   answers is for the connection to find out (``timeout``/``unreachable``), never a reason
   to skip it.
4. Discovery never connects to anything: it reads the directory and ``/proc`` only.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from reloadctl.errors import ConfigError
from reloadctl.proto.address import default_socket_dir, parse_socket_name

__all__ = ["LocalAgent", "discover", "process_alive"]

logger = logging.getLogger(__name__)

#: Slack between a socket's mtime and its process's start time (clock-tick rounding, and a
#: socket is always made after its process starts).
_START_SLACK_S: Final = 2.0


@dataclass(frozen=True, slots=True)
class LocalAgent:
    """A live local agent socket: ``prog``/``pid`` from its name, ``path`` of the socket."""

    prog: str
    pid: int
    path: Path

    @property
    def name(self) -> str:
        """The target name shown for it: ``<prog>-<pid>``."""
        return f"{self.prog}-{self.pid}"

    @property
    def address(self) -> str:
        """Its address in the form the CLI accepts."""
        return f"unix://{self.path}"


def _boot_time() -> float | None:
    try:
        with open("/proc/stat", encoding="ascii") as f:
            for line in f:
                if line.startswith("btime "):
                    return float(line.split()[1])
    except OSError:
        pass
    return None


def _process_start(pid: int, boot: float | None) -> tuple[str, float | None] | None:
    """``(state, start unix time)`` from ``/proc/<pid>/stat``, or None without /proc."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
            raw = f.read()
    except FileNotFoundError:
        return ("gone", None)
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = raw[raw.rfind(")") + 2 :].split()
    if len(fields) < 20:
        return None
    state = fields[0]
    if boot is None:
        return state, None
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    return state, boot + int(fields[19]) / ticks


def process_alive(pid: int, *, since: float | None = None, boot: float | None = None) -> bool:
    """True when ``pid`` runs as this user (not a zombie) and, if ``since`` is given, did
    not start after ``since`` (unix time) by more than a small slack (rule 2)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # a pid of another user cannot own a socket in our private directory
    info = _process_start(pid, boot if boot is not None else _boot_time())
    if info is None:
        return True  # no /proc: the kill probe is all we know
    state, started = info
    if state in ("gone", "Z", "X"):
        return False
    return not (since is not None and started is not None and started > since + _START_SLACK_S)


def discover(directory: Path | None = None) -> list[LocalAgent]:
    """Find this user's live agents (rules 1-3), removing stale sockets we own.

    Returns:
        Live agents sorted by pid (a stable order for batches and the canary).

    Raises:
        ConfigError: the directory exists but belongs to another user.
    """
    d = directory if directory is not None else default_socket_dir()
    try:
        dst = d.stat()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ConfigError(f"cannot read agent socket directory {d}: {exc.strerror}") from None
    uid = os.getuid()
    if dst.st_uid != uid:
        raise ConfigError(
            f"agent socket directory {d} belongs to uid {dst.st_uid}, not to you (uid {uid})"
        )
    boot = _boot_time()
    found: list[LocalAgent] = []
    try:
        names = sorted(os.listdir(d))
    except OSError as exc:
        raise ConfigError(f"cannot list agent socket directory {d}: {exc.strerror}") from None
    for name in names:
        parsed = parse_socket_name(name)
        if parsed is None:
            continue
        prog, pid = parsed
        path = d / name
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue  # removed while we looked
        if not stat.S_ISSOCK(st.st_mode):
            continue
        if process_alive(pid, since=st.st_mtime, boot=boot):
            found.append(LocalAgent(prog, pid, path))
        elif st.st_uid == uid:
            try:
                path.unlink()
                logger.info("removed stale agent socket %s", path)
            except OSError as exc:
                logger.info("cannot remove stale agent socket %s: %s", path, exc)
    found.sort(key=lambda a: a.pid)
    return found
