"""Loading the shared secret for agent and CLI: argument, then a secret file, then the env.

Rules:
1. Sources in order: an explicit ``Secret``/file argument, then the file named by
   ``RELOADCTL_SECRET_FILE``, then the value of ``RELOADCTL_SECRET``. The first source that
   is set wins; a set but unusable source is an error, never silently skipped.
2. A secret file must be a regular file that is neither group- nor world-readable (nor
   writable); otherwise ``SecretError`` names the file and the ``chmod 600`` fix.
3. One trailing newline (``\\n`` or ``\\r\\n``) is stripped from file contents, so
   ``echo s3cret > file`` works; an empty secret is an error.
4. A ``Secret`` never shows its bytes: ``repr``/``str`` print ``Secret(<hidden>)``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from reloadctl.errors import SecretError

SECRET_FILE_ENV: Final = "RELOADCTL_SECRET_FILE"  # noqa: S105 (a variable name)
SECRET_ENV: Final = "RELOADCTL_SECRET"  # noqa: S105 (a variable name)
#: Refuse absurdly large "secret" files (a wrong path pointing at a log, say).
MAX_SECRET_BYTES: Final = 4096


class Secret:
    """A shared secret; compares in constant time and never reveals itself in a repr.

    Args:
        value: the secret bytes (a ``str`` is encoded as UTF-8); must not be empty.
        source: where it came from, for messages (``"RELOADCTL_SECRET"``, a file path).
    """

    __slots__ = ("_value", "source")

    def __init__(self, value: bytes | str, *, source: str = "argument") -> None:
        raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        if not raw:
            raise SecretError(f"the secret from {source} is empty")
        self._value: bytes = raw
        self.source: str = source

    def reveal(self) -> bytes:
        """Return the secret bytes (only the auth code should call this)."""
        return self._value

    def __repr__(self) -> str:
        return "Secret(<hidden>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        import hmac

        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        # Hashing the value would make the secret guessable through dict timing; identity of
        # the class is enough (equal secrets still compare equal through __eq__).
        return hash(Secret)

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a Secret cannot be pickled")


def read_secret_file(path: str | os.PathLike[str]) -> Secret:
    """Read a secret from ``path``, enforcing rule 2 (owner-only permissions).

    Raises:
        SecretError: missing/unreadable file, not a regular file, group/world access, empty.
    """
    p = Path(path)
    try:
        # O_NOFOLLOW is not used: a symlink to a private file (docker secrets) is normal;
        # we check the permissions of what we actually opened (fstat), not of the name.
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise SecretError(f"secret file {p} does not exist") from None
    except OSError as exc:
        raise SecretError(f"cannot open secret file {p}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SecretError(f"secret file {p} is not a regular file")
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise SecretError(
                f"secret file {p} is accessible by group or others "
                f"(mode {stat.S_IMODE(st.st_mode):04o}); fix it with: chmod 600 {p}"
            )
        data = os.read(fd, MAX_SECRET_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_SECRET_BYTES:
        raise SecretError(f"secret file {p} is larger than {MAX_SECRET_BYTES} bytes")
    if data.endswith(b"\r\n"):
        data = data[:-2]
    elif data.endswith(b"\n"):
        data = data[:-1]
    return Secret(data, source=str(p))


def load_secret(
    secret: Secret | bytes | str | None = None,
    *,
    secret_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Secret | None:
    """Find the secret by rule 1; ``None`` when no source is set.

    Args:
        secret: an explicit secret (highest priority).
        secret_file: an explicit secret file (e.g. ``--secret-file``).
        environ: the environment to read (default ``os.environ``).

    Raises:
        SecretError: a source is set but unusable (see ``read_secret_file``), or both
            ``secret`` and ``secret_file`` were given.
    """
    if secret is not None and secret_file is not None:
        raise SecretError("give either a secret or a secret file, not both")
    if secret is not None:
        return secret if isinstance(secret, Secret) else Secret(secret)
    if secret_file is not None:
        return read_secret_file(secret_file)
    env = os.environ if environ is None else environ
    env_file = env.get(SECRET_FILE_ENV)
    if env_file:
        return read_secret_file(env_file)
    env_value = env.get(SECRET_ENV)
    if env_value:
        return Secret(env_value, source=SECRET_ENV)
    return None
