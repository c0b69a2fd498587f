"""Helpers for the security tests: a throwaway PKI (openssl binary) and process footprints."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

OPENSSL = shutil.which("openssl")


@dataclass(frozen=True, slots=True)
class Pki:
    """PEM files: a CA, a server cert for localhost/127.0.0.1, a client cert, and rogues."""

    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str
    rogue_ca: str  # an unrelated CA
    rogue_client_cert: str  # a client cert signed by the rogue CA
    rogue_client_key: str
    wrong_name_cert: str  # signed by the real CA, but for another host name
    wrong_name_key: str


def _run(*args: str, cwd: Path) -> None:
    assert OPENSSL is not None
    subprocess.run([OPENSSL, *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _ca(d: Path, name: str) -> None:
    _run(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-addext", "subjectKeyIdentifier=hash",
        cwd=d,
    )  # fmt: skip


def _leaf(d: Path, name: str, ca: str, cn: str, *, san: str, usage: str) -> None:
    _run(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}",
        cwd=d,
    )  # fmt: skip
    (d / f"{name}.ext").write_text(
        f"subjectAltName={san}\n"
        f"extendedKeyUsage={usage}\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n"
    )
    _run(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext",
        cwd=d,
    )  # fmt: skip


def make_pki(d: Path) -> Pki:
    """Generate every file of ``Pki`` in ``d`` (keys are chmod 600)."""
    _ca(d, "ca")
    _ca(d, "rogue")
    _leaf(d, "server", "ca", "localhost", san="DNS:localhost,IP:127.0.0.1", usage="serverAuth")
    _leaf(d, "client", "ca", "operator", san="DNS:operator", usage="clientAuth")
    _leaf(d, "rclient", "rogue", "intruder", san="DNS:intruder", usage="clientAuth")
    _leaf(d, "wrong", "ca", "elsewhere", san="DNS:elsewhere.example", usage="serverAuth")
    for key in d.glob("*.key"):
        key.chmod(0o600)
    p = lambda n: str(d / n)  # noqa: E731
    return Pki(
        ca=p("ca.pem"),
        server_cert=p("server.pem"),
        server_key=p("server.key"),
        client_cert=p("client.pem"),
        client_key=p("client.key"),
        rogue_ca=p("rogue.pem"),
        rogue_client_cert=p("rclient.pem"),
        rogue_client_key=p("rclient.key"),
        wrong_name_cert=p("wrong.pem"),
        wrong_name_key=p("wrong.key"),
    )


@dataclass(frozen=True, slots=True)
class Footprint:
    """What a process holds: resident memory, open fds, threads."""

    rss_kib: int
    fds: int
    threads: int

    def __str__(self) -> str:
        return f"rss={self.rss_kib} KiB fds={self.fds} threads={self.threads}"


def footprint(pid: int) -> Footprint:
    """Read ``/proc/<pid>`` now."""
    rss = threads = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
        elif line.startswith("Threads:"):
            threads = int(line.split()[1])
    return Footprint(rss, len(os.listdir(f"/proc/{pid}/fd")), threads)
