"""Inventory parsing: the format, and one clear line for every malformed file."""

from __future__ import annotations

from pathlib import Path

import pytest

from reloadctl.client.inventory import (
    Inventory,
    default_inventory_path,
    load_inventory,
    parse_inventory,
)
from reloadctl.errors import InventoryError


def test_full_format() -> None:
    inv = parse_inventory(
        b"""
[defaults]
port = 7100
secret_file = "~/s"
[groups.web]
labels = { role = "api" }
targets = ["a.internal", "b.internal:9000", "unix:///run/x.sock", "[::1]"]
[groups.db]
port = 7200
secret_file = "/etc/db.secret"
targets = [{ name = "db1", address = "10.0.0.1", labels = { zone = "a" } }]
"""
    )
    web, db = inv.groups
    assert [t.address for t in web.targets] == [
        "tcp://a.internal:7100",
        "tcp://b.internal:9000",
        "unix:///run/x.sock",
        "tcp://[::1]:7100",
    ]
    assert web.labels == (("role", "api"),)
    assert web.secret_file == str(Path("~/s").expanduser())
    assert db.secret_file == "/etc/db.secret"
    (db1,) = db.targets
    assert (db1.name, db1.address, db1.labels, db1.named) == (
        "db1",
        "tcp://10.0.0.1:7200",
        (("zone", "a"),),
        True,
    )
    assert inv.find("db1") == (db, db1)
    assert inv.find("a.internal") is None  # only targets given a name are found by name


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"[groups.web\n", "not valid TOML"),
        (b"\xff\xfe", "not UTF-8"),
        (b"[defaults]\nport = 0\n", "defaults.port must be a port number"),
        (b"[defaults]\nsecert_file = 'x'\n", "unknown key defaults.secert_file"),
        (b"extra = 1\n", "unknown key (top level).extra"),
        (b"groups = 3\n", "groups must be a table"),
        (b"[groups.web]\ntargets = 'a'\n", "groups.web.targets must be a list"),
        (b"[groups.web]\ntargets = [3]\n", "groups.web.targets[0] must be a table"),
        (b"[groups.web]\ntargets = ['a/b']\n", "groups.web.targets[0]: cannot parse address"),
        (b"[groups.web]\ntargets = [{name = 'x'}]\n", "targets[0].address must be a string"),
        (b"[groups.web]\nlabels = {a = 1}\n", "groups.web.labels must be a table of strings"),
        (b"[groups.web]\nport = true\n", "groups.web.port must be a port number"),
        (b"[groups.web]\nsecret_file = ''\n", "groups.web.secret_file must be a file path"),
    ],
)
def test_malformed_is_one_clear_line(text: bytes, message: str) -> None:
    with pytest.raises(InventoryError) as info:
        parse_inventory(text, path="/etc/inv.toml")
    assert message in str(info.value)
    assert "/etc/inv.toml" in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_group_lists_known_ones() -> None:
    inv = parse_inventory(b"[groups.web]\n[groups.db]\n", path="i.toml")
    with pytest.raises(
        InventoryError, match=r"unknown group 'wbe' in inventory i.toml; groups: web, db"
    ):
        inv.group("wbe")
    with pytest.raises(InventoryError, match="no inventory file found"):
        Inventory(path="").group("web")


def test_load_missing_and_default_path(tmp_path: Path) -> None:
    assert load_inventory(tmp_path / "none.toml") == Inventory(path="")
    with pytest.raises(InventoryError, match="does not exist"):
        load_inventory(tmp_path / "none.toml", required=True)
    assert default_inventory_path({"XDG_CONFIG_HOME": "/cfg"}) == Path(
        "/cfg/reloadctl/inventory.toml"
    )
    assert default_inventory_path(
        {"RELOADCTL_INVENTORY": "/x.toml", "XDG_CONFIG_HOME": "/c"}
    ) == Path("/x.toml")
    f = tmp_path / "inv.toml"
    f.write_text("[groups.web]\ntargets = ['10.0.0.1']\n")
    assert load_inventory(f).groups[0].targets[0].address == "tcp://10.0.0.1:7878"
