"""Secret loading: precedence, the permission check, and no leaking reprs."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from reloadctl.errors import SecretError
from reloadctl.secrets import Secret, load_secret, read_secret_file


def _write(path: Path, data: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


def test_secret_never_shows_its_bytes() -> None:
    s = Secret(b"hunter2")
    for text in (repr(s), str(s), f"{s}", repr([s]), repr({"k": s})):
        assert "hunter2" not in text
    assert s.reveal() == b"hunter2"
    with pytest.raises(TypeError):
        pickle.dumps(s)


def test_equality_is_by_value() -> None:
    assert Secret("a") == Secret(b"a")
    assert Secret("a") != Secret("b")


def test_empty_secret_refused() -> None:
    with pytest.raises(SecretError, match="empty"):
        Secret(b"")


def test_precedence(tmp_path: Path) -> None:
    f_env = _write(tmp_path / "env", b"from-env-file\n")
    f_arg = _write(tmp_path / "arg", b"from-arg-file")
    env = {"RELOADCTL_SECRET_FILE": str(f_env), "RELOADCTL_SECRET": "from-env"}
    assert load_secret("explicit", environ=env).reveal() == b"explicit"  # type: ignore[union-attr]
    got = load_secret(secret_file=f_arg, environ=env)
    assert got is not None and got.reveal() == b"from-arg-file"
    got = load_secret(environ=env)
    assert got is not None and got.reveal() == b"from-env-file"
    got = load_secret(environ={"RELOADCTL_SECRET": "from-env"})
    assert got is not None and got.reveal() == b"from-env"
    assert load_secret(environ={}) is None


def test_trailing_newline_stripped_once(tmp_path: Path) -> None:
    assert read_secret_file(_write(tmp_path / "a", b"s\r\n")).reveal() == b"s"
    assert read_secret_file(_write(tmp_path / "b", b"s\n\n")).reveal() == b"s\n"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o610])
def test_group_or_world_access_refused_with_fix(tmp_path: Path, mode: int) -> None:
    path = _write(tmp_path / "secret", b"x", mode)
    with pytest.raises(SecretError) as info:
        load_secret(environ={"RELOADCTL_SECRET_FILE": str(path)})
    assert str(path) in str(info.value)
    assert f"chmod 600 {path}" in str(info.value)


def test_set_but_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SecretError, match="does not exist"):
        load_secret(
            environ={
                "RELOADCTL_SECRET_FILE": str(tmp_path / "nope"),
                "RELOADCTL_SECRET": "fallback",
            }
        )


def test_directory_and_empty_file_refused(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir(mode=0o700)
    with pytest.raises(SecretError, match="regular file"):
        read_secret_file(d)
    with pytest.raises(SecretError, match="empty"):
        read_secret_file(_write(tmp_path / "e", b"\n"))


def test_oversized_file_refused(tmp_path: Path) -> None:
    with pytest.raises(SecretError, match="larger"):
        read_secret_file(_write(tmp_path / "big", b"x" * 5000))


def test_both_arguments_refused(tmp_path: Path) -> None:
    with pytest.raises(SecretError, match="not both"):
        load_secret("a", secret_file=tmp_path / "x")


def test_symlink_to_private_file_is_fine(tmp_path: Path) -> None:
    target = _write(tmp_path / "real", b"k")
    link = tmp_path / "link"
    os.symlink(target, link)
    assert read_secret_file(link).reveal() == b"k"
