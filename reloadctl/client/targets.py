"""Target selection: turn ``-H``/``-g``/``--all``/``--local`` into an ordered list of targets.

Rules:
1. Order is kept: ``-H`` targets in the order given, then ``-g`` groups in the order given
   (each in inventory order), then ``--all`` (every group, inventory order), then
   ``--local`` (by pid). Batches and the canary take targets in this order.
2. ``RELOADCTL_HOST`` (comma separated) stands for ``-H`` only when no selection option at
   all was given; ``-H`` values may be comma separated too.
3. ``-H NAME`` selects the inventory target given that ``name`` (with its group's labels
   and secret file) when there is one; otherwise NAME is an address (``proto.address``).
4. A ``tcp://`` host name that resolves to several addresses is several targets, one per
   address, named ``host[ip]``. Loopback names (``localhost``) and ``tls://`` targets are not
   expanded: the former are one machine, the latter need the name to verify certificates.
5. Resolution is bounded by ``resolve_timeout``. A name that does not resolve (or not in
   time) stays in the selection with ``problem`` set: the fan-out reports it
   ``unreachable`` with that reason, so it is counted as a target that did not answer
   rather than dropped or failing the whole command.
6. Duplicates (same canonical address) are removed; the first occurrence wins.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

from reloadctl.client.inventory import Inventory
from reloadctl.errors import AddressError
from reloadctl.proto.address import (
    Address,
    format_address,
    is_loopback_host,
    parse_address,
)

__all__ = ["HOST_ENV", "Selection", "Target", "resolve_host", "select_targets", "split_hosts"]

HOST_ENV: Final = "RELOADCTL_HOST"
DEFAULT_RESOLVE_TIMEOUT: Final = 2.0

Resolver = Callable[[str, int], list[str]]


@dataclass(frozen=True, slots=True)
class Target:
    """One process to talk to.

    ``name`` is what output shows (unique within a selection); ``address`` is canonical
    (``proto.address.format_address``); ``secret_file`` comes from the inventory ("" when
    none); ``problem`` says why the target cannot be contacted at all ("" when it can).
    """

    name: str
    address: str
    labels: tuple[tuple[str, str], ...] = ()
    group: str = ""
    secret_file: str = ""
    problem: str = ""


@dataclass(frozen=True, slots=True)
class Selection:
    """The targets selected, in order, and the inventory they came from."""

    targets: tuple[Target, ...]
    inventory: Inventory


def split_hosts(values: Sequence[str]) -> list[str]:
    """Split comma-separated ``-H``/``RELOADCTL_HOST`` values; blanks are dropped."""
    return [part.strip() for v in values for part in v.split(",") if part.strip()]


def resolve_host(host: str, port: int) -> list[str]:
    """All IP addresses of ``host`` for TCP, in resolver order, without repeats.

    Raises:
        AddressError: the name does not resolve.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise AddressError(f"cannot resolve host {host!r}: {exc}") from None
    ips: list[str] = []
    for info in infos:
        ip = str(info[4][0])
        if ip not in ips:
            ips.append(ip)
    return ips


def _is_ip(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _resolve_all(
    hosts: set[tuple[str, int]], resolver: Resolver, timeout: float
) -> dict[tuple[str, int], list[str] | str]:
    """Resolve concurrently; each entry is a list of IPs or the reason it failed."""
    out: dict[tuple[str, int], list[str] | str] = {}
    lock = threading.Lock()

    def work(key: tuple[str, int]) -> None:
        try:
            value: list[str] | str = resolver(*key) or f"host {key[0]!r} has no address"
        except AddressError as exc:
            value = str(exc)
        except Exception as exc:  # noqa: BLE001 - a resolver bug fails that target only
            value = f"cannot resolve host {key[0]!r}: {exc}"
        with lock:
            out[key] = value

    # Daemon threads: getaddrinfo cannot be cancelled, and a hung lookup must not stop exit.
    threads = [
        threading.Thread(target=work, args=(k,), name="reloadctl-resolve", daemon=True)
        for k in sorted(hosts)
    ]
    for t in threads:
        t.start()
    end = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, end - time.monotonic()))
    with lock:
        for key in hosts:
            out.setdefault(key, f"cannot resolve host {key[0]!r}: no answer within {timeout:g}s")
        return dict(out)


def _expand(targets: list[Target], resolver: Resolver, timeout: float) -> list[Target]:
    """Apply rules 4 and 5 to tcp targets named by host name."""
    parsed: list[Address | None] = []
    todo: set[tuple[str, int]] = set()
    for t in targets:
        addr = None if t.problem else parse_address(t.address)
        if addr is not None and not (
            addr.scheme == "tcp" and not _is_ip(addr.host) and not is_loopback_host(addr.host)
        ):
            addr = None
        parsed.append(addr)
        if addr is not None:
            todo.add((addr.host, addr.port))
    if not todo:
        return targets
    resolved = _resolve_all(todo, resolver, timeout)
    out: list[Target] = []
    for t, addr in zip(targets, parsed, strict=True):
        if addr is None:
            out.append(t)
            continue
        ips = resolved[(addr.host, addr.port)]
        if isinstance(ips, str):
            out.append(replace(t, problem=ips))
        elif len(ips) == 1:
            out.append(t)
        else:
            for ip in ips:
                address = format_address(Address("tcp", host=ip, port=addr.port))
                out.append(replace(t, name=f"{t.name}[{ip}]", address=address))
    return out


def _from_spec(spec: str, inventory: Inventory) -> Target:
    found = inventory.find(spec)
    if found is not None:
        group, it = found
        return Target(it.name, it.address, it.labels, group.name, group.secret_file)
    return Target(spec, format_address(parse_address(spec)))


def select_targets(
    hosts: Sequence[str] = (),
    groups: Sequence[str] = (),
    *,
    all_groups: bool = False,
    local: bool = False,
    inventory: Inventory | None = None,
    environ: Mapping[str, str] | None = None,
    resolver: Resolver = resolve_host,
    resolve_timeout: float = DEFAULT_RESOLVE_TIMEOUT,
    socket_dir: Path | None = None,
) -> Selection:
    """Build the selection by rules 1-6.

    Args:
        hosts: ``-H`` values (names from the inventory, or addresses; commas split).
        groups: ``-g`` group names.
        all_groups: ``--all``: every target of every inventory group.
        local: ``--local``: every live agent of this user (``discovery.discover``).
        inventory: the parsed inventory (None: empty).
        environ: where ``RELOADCTL_HOST`` is read (default ``os.environ``).
        resolver: ``(host, port) -> [ip, ...]``, raising ``AddressError`` (tests inject one).
        resolve_timeout: bound on all DNS lookups together, in seconds.
        socket_dir: where ``--local`` looks (default: the runtime socket directory).

    Returns:
        The selection; it may be empty (the caller reports a usage error).

    Raises:
        AddressError: a ``-H`` value is neither an inventory name nor an address.
        InventoryError: a ``-g`` group is not in the inventory.
        ConfigError: the local socket directory cannot be trusted or read.
    """
    inv = inventory if inventory is not None else Inventory(path="")
    env = os.environ if environ is None else environ
    specs = split_hosts(hosts)
    if not specs and not groups and not all_groups and not local:
        specs = split_hosts([env.get(HOST_ENV, "")])
    selected = [_from_spec(s, inv) for s in specs]
    chosen = [inv.group(g) for g in groups]
    if all_groups:
        chosen.extend(inv.groups)
    for group in chosen:
        selected.extend(
            Target(t.name, t.address, t.labels, group.name, group.secret_file)
            for t in group.targets
        )
    selected = _expand(selected, resolver, resolve_timeout)
    if local:
        from reloadctl.client.discovery import discover

        selected.extend(Target(a.name, a.address, group="local") for a in discover(socket_dir))
    unique: list[Target] = []
    seen: set[str] = set()
    for t in selected:
        key = t.address if not t.problem else f"problem:{t.name}"
        if key not in seen:
            seen.add(key)
            unique.append(t)
    return Selection(tuple(unique), inv)
