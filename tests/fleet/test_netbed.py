"""Multi-host behaviour for real: agents in network namespaces, latency, dropped hosts."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import netbed as nb
import pytest
from fleetkit import Code, by_target

from reloadctl.client.connection import execute
from reloadctl.proto.messages import ReloadRequest, StatusRequest
from reloadctl.secrets import Secret

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SECRET = Secret(b"fleet-test-secret-0123456789abcdef")


def test_bed_hosts_are_separate_and_torn_down(netbed: Callable[..., nb.NetBed]) -> None:
    bed = netbed(2)
    names = [h.ns for h in bed.hosts]
    assert len({h.ip for h in bed.hosts}) == 2
    listed = nb._ip("netns", "list").stdout
    assert all(n in listed for n in names)
    bed.close()
    listed = nb._ip("netns", "list").stdout
    assert not any(n in listed for n in names)
    links = nb._ip("-o", "link", "show").stdout
    assert bed.bridge not in links
    assert not any(h.veth in links for h in bed.hosts)


@pytest.mark.timeout(120)
def test_reload_reaches_every_host_through_the_latency(
    netbed: Callable[..., nb.NetBed], code: Code
) -> None:
    bed = netbed(3, rtt_ms=40)
    for host in bed.hosts:
        bed.start_agents(host, 2, app=code.app, env=code.env)
    targets = bed.addresses()
    assert len({t.split("//")[1].split(":")[0] for t in targets}) == 3
    code.write("v2")
    hosts = [a for t in targets for a in ("-H", t)]
    rc, records, err = code.cli("reload", *hosts, "fleetmod")
    assert rc == 0, err
    got = by_target(records)
    assert len(got) == 6
    assert {r["status"] for r in got.values()} == {"reloaded"}


@pytest.mark.timeout(120)
def test_a_reload_costs_four_round_trips(netbed: Callable[..., nb.NetBed], code: Code) -> None:
    # TCP connect, the agent's hello, proof -> welcome (+ rpyc's root, pipelined), and the
    # submit that waits for the job: 4 x RTT. Measured at 200 ms so CPU does not blur it.
    rtt = 0.2
    bed = netbed(1, rtt_ms=rtt * 1000)
    [address] = bed.start_agents(bed.hosts[0], 1, app=code.app, env=code.env)
    execute(address, StatusRequest(), secret=SECRET, connect_timeout=5, timeout=10)  # warm
    timings = []
    for value in ("v2", "v3"):
        code.write(value)
        started = time.monotonic()
        [result] = execute(  # type: ignore[misc]
            address, ReloadRequest(("fleetmod",)), secret=SECRET, connect_timeout=5, timeout=10
        )
        timings.append(time.monotonic() - started)
        assert result.status == "reloaded"
    best = min(timings)
    assert 3.9 * rtt <= best < 4.6 * rtt, f"{best / rtt:.2f} round trips"


@pytest.mark.timeout(120)
def test_a_host_that_drops_everything_is_unreachable_others_unaffected(
    netbed: Callable[..., nb.NetBed], code: Code
) -> None:
    bed = netbed(2, rtt_ms=20)
    good = bed.start_agents(bed.hosts[0], 2, app=code.app, env=code.env)
    dead = bed.start_agents(bed.hosts[1], 2, app=code.app, env=code.env)
    bed.drop_all(bed.hosts[1])
    code.write("v2")
    started = time.monotonic()
    hosts = [a for t in good + dead for a in ("-H", t)]
    rc, records, err = code.cli("reload", "--connect-timeout", "1.5", *hosts, "fleetmod")
    elapsed = time.monotonic() - started
    got = by_target(records)
    assert rc == 3, err
    assert [got[t]["status"] for t in good] == ["reloaded", "reloaded"]
    assert {got[t]["status"] for t in dead} <= {"unreachable", "timeout"}
    # connect timeout + the CLI's own start; nowhere near the 30 s operation timeout
    assert elapsed < 1.5 + 6, elapsed


@pytest.mark.timeout(120)
def test_an_agent_that_never_answers_the_handshake_is_timeout(
    netbed: Callable[..., nb.NetBed], code: Code
) -> None:
    bed = netbed(2, rtt_ms=20)
    [good] = bed.start_agents(bed.hosts[0], 1, app=code.app, env=code.env)
    silent = bed.start_silent(bed.hosts[1], 7100)
    code.write("v2")
    started = time.monotonic()
    rc, records, err = code.cli(
        "reload", "--connect-timeout", "1.5", "-H", good, "-H", silent, "fleetmod"
    )
    got = by_target(records)
    assert rc == 3, err
    assert got[good]["status"] == "reloaded"
    assert got[silent]["status"] == "timeout"
    assert time.monotonic() - started < 1.5 + 6


@pytest.mark.timeout(180)
def test_loss_every_target_reports_within_the_deadline(
    netbed: Callable[..., nb.NetBed], code: Code
) -> None:
    bed = netbed(2, rtt_ms=20, loss=0.3)
    for host in bed.hosts:
        bed.start_agents(host, 2, app=code.app, env=code.env)
    targets = bed.addresses()
    code.write("v2")
    hosts = [a for t in targets for a in ("-H", t)]
    started = time.monotonic()
    rc, records, err = code.cli(
        "reload", "--connect-timeout", "10", "--deadline", "40", *hosts, "fleetmod"
    )
    elapsed = time.monotonic() - started
    got = by_target(records)
    assert set(got) == set(targets), err
    assert elapsed < 40 + 5
    # retransmission stalls slow it down, they do not lose anything
    assert rc == 0, (err, [r["status"] for r in got.values()])


@pytest.mark.timeout(120)
def test_canary_with_a_failing_verify_touches_no_other_target(
    netbed: Callable[..., nb.NetBed], code: Code
) -> None:
    bed = netbed(2, rtt_ms=20)
    for host in bed.hosts:
        bed.start_agents(host, 2, app=code.app, env=code.env)
    targets = bed.addresses()
    hosts = [a for t in targets for a in ("-H", t)]
    code.write("v2-broken", healthy=False)
    rc, records, err = code.cli(
        "reload",
        "--canary",
        "1",
        "--max-failures",
        "0",
        "--verify",
        "fleetcheck:healthy",
        *hosts,
        "fleetmod",
    )
    assert rc == 5, err
    got = by_target(records)
    canary, rest = targets[0], targets[1:]
    assert got[canary]["status"] == "failed"
    error = got[canary]["error"]
    assert isinstance(error, dict)
    assert error["type"] == "VerifyFailed"
    assert "returned False" in str(error["message"])
    assert "rolled back" in str(error["message"])
    assert {got[t]["status"] for t in rest} == {"not_attempted"}
    # nothing was patched beyond the canary (and the canary is back on its old code)
    rc, status, err = code.cli("status", *hosts)
    assert rc == 0, err
    patched = {str(r["target"]): r["agent"]["patched"] for r in status if "target" in r}  # type: ignore[index]
    assert all(not patched[t] for t in rest), patched
    # a good patch with the same verify goes everywhere
    code.write("v3", healthy=True)
    rc, records, err = code.cli(
        "reload",
        "--canary",
        "1",
        "--max-failures",
        "0",
        "--verify",
        "fleetcheck:healthy",
        *hosts,
        "fleetmod",
    )
    assert rc == 0, err
    assert {r["status"] for r in by_target(records).values()} == {"reloaded"}


@pytest.mark.timeout(120)
def test_tls_agents_across_hosts(
    netbed: Callable[..., nb.NetBed], code: Code, tmp_path: Path
) -> None:
    bed = netbed(2, rtt_ms=20)
    tls = nb.make_tls(tmp_path, [h.ip for h in bed.hosts])
    # agents: certificate and key only (a CA there would require client certificates)
    env = dict(code.env, RELOADCTL_AGENT_TLS_CERT=tls["RELOADCTL_AGENT_TLS_CERT"])
    env["RELOADCTL_AGENT_TLS_KEY"] = tls["RELOADCTL_AGENT_TLS_KEY"]
    for host in bed.hosts:
        bed.start_agents(host, 2, app=code.app, env=env, scheme="tls")
    targets = bed.addresses()
    assert all(t.startswith("tls://") for t in targets)
    code.write("v2")
    code.env["RELOADCTL_CLIENT_TLS_CA"] = tls["RELOADCTL_CLIENT_TLS_CA"]
    hosts = [a for t in targets for a in ("-H", t)]
    rc, records, err = code.cli("reload", *hosts, "fleetmod")
    assert rc == 0, err
    assert {r["status"] for r in by_target(records).values()} == {"reloaded"}
    # without the CA the agents' certificates do not verify: auth_failed, exit 4
    del code.env["RELOADCTL_CLIENT_TLS_CA"]
    rc, records, err = code.cli("status", *hosts)
    assert rc == 4, err
    assert {r["status"] for r in by_target(records).values()} == {"auth_failed"}
