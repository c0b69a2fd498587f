"""The inventory: a TOML file naming groups of targets, their labels, secret files and ports.

The file is ``--inventory PATH``, else ``$RELOADCTL_INVENTORY``, else
``$XDG_CONFIG_HOME/reloadctl/inventory.toml`` (``~/.config/reloadctl/inventory.toml``)::

    [defaults]
    port = 7878                                  # for targets written without a port
    secret_file = "~/.config/reloadctl/secret"   # a path, never the secret itself

    [groups.web]
    labels = { role = "api", env = "prod" }
    port = 7001                                  # overrides defaults.port for this group
    secret_file = "/etc/reloadctl/web.secret"    # overrides defaults.secret_file
    targets = [
        "web1.internal",                          # an address (see proto.address)
        { name = "web2", address = "10.0.0.12:7001", labels = { zone = "b" } },
        "unix:///run/shop/worker.sock",
    ]

Rules:
1. Groups and targets keep the file's order; that order is the rollout order for ``--all``.
2. A target named with ``name`` can be selected by that name with ``-H``.
3. Anything malformed raises ``InventoryError`` with one line naming the file and the key;
   unknown keys are errors too (a misspelt ``secert_file`` must not be silently ignored).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from reloadctl.errors import AddressError, InventoryError
from reloadctl.proto.address import DEFAULT_PORT, format_address, parse_address

__all__ = [
    "INVENTORY_ENV",
    "Group",
    "Inventory",
    "InventoryTarget",
    "default_inventory_path",
    "load_inventory",
    "parse_inventory",
]

INVENTORY_ENV: Final = "RELOADCTL_INVENTORY"
_DEFAULT_KEYS: Final = frozenset({"port", "secret_file"})
_GROUP_KEYS: Final = frozenset({"targets", "labels", "port", "secret_file"})
_TARGET_KEYS: Final = frozenset({"name", "address", "labels"})
_TOP_KEYS: Final = frozenset({"defaults", "groups"})


@dataclass(frozen=True, slots=True)
class InventoryTarget:
    """One target of a group: its canonical address and merged labels."""

    name: str
    address: str
    labels: tuple[tuple[str, str], ...] = ()
    named: bool = False  # the file gave it a ``name`` (rule 2)


@dataclass(frozen=True, slots=True)
class Group:
    """A named, ordered list of targets sharing labels and a secret file."""

    name: str
    targets: tuple[InventoryTarget, ...]
    labels: tuple[tuple[str, str], ...] = ()
    secret_file: str = ""


@dataclass(frozen=True, slots=True)
class Inventory:
    """A parsed inventory file (``path`` is empty for an inventory that does not exist)."""

    path: str
    groups: tuple[Group, ...] = ()

    def group(self, name: str) -> Group:
        """Return the group ``name``.

        Raises:
            InventoryError: no such group (the message lists the known ones).
        """
        for g in self.groups:
            if g.name == name:
                return g
        where = f"in inventory {self.path}" if self.path else "(no inventory file found)"
        known = ", ".join(g.name for g in self.groups) or "none"
        raise InventoryError(f"unknown group {name!r} {where}; groups: {known}")

    def find(self, name: str) -> tuple[Group, InventoryTarget] | None:
        """Return the first target given ``name`` in the file, with its group (rule 2)."""
        for g in self.groups:
            for t in g.targets:
                if t.named and t.name == name:
                    return g, t
        return None


def default_inventory_path(environ: Mapping[str, str] | None = None) -> Path:
    """``$RELOADCTL_INVENTORY``, else ``$XDG_CONFIG_HOME/reloadctl/inventory.toml``."""
    env = os.environ if environ is None else environ
    explicit = env.get(INVENTORY_ENV)
    if explicit:
        return Path(explicit).expanduser()
    config = env.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(config) / "reloadctl" / "inventory.toml"


def load_inventory(path: Path | None = None, *, required: bool = False) -> Inventory:
    """Read and parse the inventory file.

    Args:
        path: the file; None means ``default_inventory_path()``.
        required: when False, a missing file is an empty inventory; when True, an error.

    Raises:
        InventoryError: the file is unreadable or malformed (rule 3), or missing and required.
    """
    p = path if path is not None else default_inventory_path()
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        if required:
            raise InventoryError(f"inventory {p} does not exist") from None
        return Inventory(path="")
    except OSError as exc:
        raise InventoryError(f"cannot read inventory {p}: {exc.strerror}") from None
    return parse_inventory(data, path=str(p))


def _toml_loads(text: str, where: str) -> dict[str, object]:
    if sys.version_info >= (3, 11):
        import tomllib as toml
    else:  # pragma: no cover - Python 3.10 has no tomllib
        try:
            import tomli as toml  # type: ignore[import-not-found,unused-ignore]
        except ModuleNotFoundError:
            raise InventoryError(
                f"reading inventory {where} needs Python 3.11 or: pip install tomli"
            ) from None
    try:
        doc: dict[str, object] = toml.loads(text)
    except toml.TOMLDecodeError as exc:
        raise InventoryError(f"inventory {where} is not valid TOML: {exc}") from None
    return doc


def _table(value: object, where: str, key: str, allowed: frozenset[str]) -> dict[str, object]:
    if not isinstance(value, dict):
        raise InventoryError(f"inventory {where}: {key} must be a table")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise InventoryError(
            f"inventory {where}: unknown key {key}.{unknown[0]} "
            f"(expected one of: {', '.join(sorted(allowed))})"
        )
    return value


def _labels(value: object, where: str, key: str) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise InventoryError(f"inventory {where}: {key} must be a table of strings")
    return tuple(value.items())


def _port(value: object, where: str, key: str, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise InventoryError(f"inventory {where}: {key} must be a port number 1-65535")
    return value


def _path(value: object, where: str, key: str, default: str) -> str:
    if value is None:
        return default
    if not isinstance(value, str) or not value:
        raise InventoryError(f"inventory {where}: {key} must be a file path")
    return os.path.expanduser(value)


def _address(text: str, port: int, where: str, key: str) -> str:
    """Canonical address of ``text``; a host written without a port gets ``port``."""
    try:
        addr = parse_address(text)
    except AddressError as exc:
        raise InventoryError(f"inventory {where}: {key}: {exc}") from None
    if not addr.is_unix and addr.port == DEFAULT_PORT and f":{DEFAULT_PORT}" not in text:
        addr = type(addr)(addr.scheme, host=addr.host, port=port)
    return format_address(addr)


def parse_inventory(data: bytes, *, path: str = "<inventory>") -> Inventory:
    """Parse inventory TOML (the module docstring shows the format).

    Raises:
        InventoryError: malformed TOML, wrong types, unknown keys or bad addresses.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InventoryError(f"inventory {path} is not UTF-8 text") from None
    doc = _table(_toml_loads(text, path), path, "(top level)", _TOP_KEYS)
    defaults = _table(doc.get("defaults", {}), path, "defaults", _DEFAULT_KEYS)
    default_port = _port(defaults.get("port"), path, "defaults.port", DEFAULT_PORT)
    default_secret = _path(defaults.get("secret_file"), path, "defaults.secret_file", "")
    groups_doc = doc.get("groups", {})
    if not isinstance(groups_doc, dict):
        raise InventoryError(f"inventory {path}: groups must be a table of [groups.NAME]")
    groups: list[Group] = []
    for gname, gvalue in groups_doc.items():
        key = f"groups.{gname}"
        g = _table(gvalue, path, key, _GROUP_KEYS)
        labels = _labels(g.get("labels"), path, f"{key}.labels")
        port = _port(g.get("port"), path, f"{key}.port", default_port)
        secret_file = _path(g.get("secret_file"), path, f"{key}.secret_file", default_secret)
        raw_targets = g.get("targets", [])
        if not isinstance(raw_targets, list):
            raise InventoryError(f"inventory {path}: {key}.targets must be a list")
        targets: list[InventoryTarget] = []
        for i, item in enumerate(raw_targets):
            tkey = f"{key}.targets[{i}]"
            if isinstance(item, str):
                address = _address(item, port, path, tkey)
                targets.append(InventoryTarget(item, address, labels))
                continue
            t = _table(item, path, tkey, _TARGET_KEYS)
            raw_address, name = t.get("address"), t.get("name")
            if not isinstance(raw_address, str):
                raise InventoryError(f"inventory {path}: {tkey}.address must be a string")
            if name is not None and (not isinstance(name, str) or not name):
                raise InventoryError(f"inventory {path}: {tkey}.name must be a string")
            address = _address(raw_address, port, path, f"{tkey}.address")
            merged = dict(labels)
            merged.update(_labels(t.get("labels"), path, f"{tkey}.labels"))
            targets.append(
                InventoryTarget(
                    name or raw_address, address, tuple(merged.items()), name is not None
                )
            )
        groups.append(Group(str(gname), tuple(targets), labels, secret_file))
    return Inventory(path=path, groups=tuple(groups))
