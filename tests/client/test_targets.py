"""Target selection tables: order, env default, inventory names, DNS expansion, duplicates."""

from __future__ import annotations

import threading
import time

import pytest

from reloadctl.client.inventory import parse_inventory
from reloadctl.client.targets import Target, select_targets, split_hosts
from reloadctl.errors import AddressError, InventoryError

INV = parse_inventory(
    b"""
[defaults]
port = 7100
[groups.web]
labels = { role = "api" }
targets = ["10.0.0.1", { name = "web2", address = "10.0.0.2:7200" }]
[groups.db]
targets = ["unix:///run/db.sock", "10.0.0.1:7100"]
""",
    path="inv.toml",
)


def fake_dns(table: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise AddressError(f"cannot resolve host {host!r}: Name or service not known")
        return table[host]

    return resolve


def names(**kw: object) -> list[str]:
    kw.setdefault("inventory", INV)
    kw.setdefault("environ", {})
    return [t.name for t in select_targets(**kw).targets]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"hosts": ["10.9.9.9", "unix:///a.sock"]}, ["10.9.9.9", "unix:///a.sock"]),
        ({"hosts": ["10.9.9.9,10.9.9.8"]}, ["10.9.9.9", "10.9.9.8"]),
        ({"groups": ["db", "web"]}, ["unix:///run/db.sock", "10.0.0.1:7100", "web2"]),
        ({"all_groups": True}, ["10.0.0.1", "web2", "unix:///run/db.sock"]),
        ({"hosts": ["web2"], "groups": ["web"]}, ["web2", "10.0.0.1"]),
        (
            {"hosts": ["10.0.0.1:7100"], "all_groups": True},
            ["10.0.0.1:7100", "web2", "unix:///run/db.sock"],
        ),
        ({"environ": {"RELOADCTL_HOST": "10.1.1.1, 10.1.1.2"}}, ["10.1.1.1", "10.1.1.2"]),
        ({"environ": {"RELOADCTL_HOST": "10.1.1.1"}, "hosts": ["10.2.2.2"]}, ["10.2.2.2"]),
        ({"environ": {"RELOADCTL_HOST": "10.1.1.1"}, "groups": ["web"]}, ["10.0.0.1", "web2"]),
        ({}, []),
    ],
)
def test_selection_order_and_sources(kwargs: dict[str, object], expected: list[str]) -> None:
    assert names(**kwargs) == expected


def test_inventory_targets_carry_group_labels_port_and_secret() -> None:
    inv = parse_inventory(
        b'[defaults]\nsecret_file = "/s/default"\n[groups.web]\nport = 7300\n'
        b'secret_file = "/s/web"\nlabels = {role = "api"}\n'
        b'targets = [{name = "w1", address = "10.0.0.1", labels = {zone = "b"}}]\n'
        b'[groups.other]\ntargets = ["10.0.0.9"]\n'
    )
    (t,) = select_targets(["w1"], inventory=inv, environ={}).targets
    assert t == Target(
        "w1", "tcp://10.0.0.1:7300", (("role", "api"), ("zone", "b")), "web", "/s/web"
    )
    (o,) = select_targets(groups=["other"], inventory=inv, environ={}).targets
    assert o.address == "tcp://10.0.0.9:7878" and o.secret_file == "/s/default"


def test_unknown_group_and_bad_address() -> None:
    with pytest.raises(InventoryError, match=r"unknown group 'nope'.*groups: web, db"):
        select_targets(groups=["nope"], inventory=INV, environ={})
    with pytest.raises(AddressError, match="cannot parse"):
        select_targets(["some/path"], inventory=INV, environ={})


def test_split_hosts() -> None:
    assert split_hosts(["a,b", " c ", ",", ""]) == ["a", "b", "c"]


def test_name_with_several_addresses_is_several_targets() -> None:
    dns = fake_dns({"web.internal": ["10.0.0.5", "10.0.0.6"], "one.internal": ["10.0.0.7"]})
    ts = select_targets(
        ["web.internal:7000", "one.internal", "10.0.0.6:7000"], environ={}, resolver=dns
    ).targets
    assert [(t.name, t.address) for t in ts] == [
        ("web.internal:7000[10.0.0.5]", "tcp://10.0.0.5:7000"),
        ("web.internal:7000[10.0.0.6]", "tcp://10.0.0.6:7000"),
        ("one.internal", "tcp://one.internal:7878"),
        # 10.0.0.6:7000 is a duplicate of the second expansion: removed.
    ]


def test_unresolvable_name_stays_with_a_problem() -> None:
    ts = select_targets(["ghost.invalid", "10.0.0.1"], environ={}, resolver=fake_dns({})).targets
    assert [t.name for t in ts] == ["ghost.invalid", "10.0.0.1"]
    assert "cannot resolve host 'ghost.invalid'" in ts[0].problem
    assert ts[1].problem == ""


def test_loopback_names_and_tls_are_not_expanded() -> None:
    calls: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        calls.append(host)
        return ["10.0.0.1", "10.0.0.2"]

    ts = select_targets(
        ["localhost:7000", "tls://secure.internal:7443"], environ={}, resolver=resolver
    )
    assert [t.address for t in ts.targets] == ["tcp://localhost:7000", "tls://secure.internal:7443"]
    assert calls == []


def test_resolution_is_bounded_in_time() -> None:
    release = threading.Event()

    def slow(host: str, port: int) -> list[str]:
        release.wait(5)
        return ["10.0.0.1"]

    started = time.monotonic()
    try:
        ts = select_targets(
            ["slow.internal"], environ={}, resolver=slow, resolve_timeout=0.2
        ).targets
    finally:
        release.set()
    assert time.monotonic() - started < 1.0
    assert "no answer within 0.2s" in ts[0].problem


def test_real_resolver_on_localhost_literal() -> None:
    from reloadctl.client.targets import resolve_host

    assert resolve_host("127.0.0.1", 7878) == ["127.0.0.1"]
    with pytest.raises(AddressError, match="cannot resolve"):
        resolve_host("no-such-host.invalid", 7878)
