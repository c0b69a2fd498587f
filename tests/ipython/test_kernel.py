"""The extension in a real Jupyter kernel (ipykernel) driven with jupyter_client, and the
real ``reloadctl`` CLI reaching that kernel through ``%reloadctl agent``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agentkit import short_tmpdir

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

RELOADCTL = shutil.which("reloadctl", path=str(Path(sys.executable).parent)) or "reloadctl"


class Kernel:
    """A real ipykernel process and a blocking client on it."""

    def __init__(self, workdir: Path) -> None:
        from jupyter_client.kernelspec import KernelSpecManager
        from jupyter_client.manager import KernelManager

        self.workdir = workdir
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(workdir),
            "IPYTHONDIR": str(workdir / "ipythondir"),
            "JUPYTER_RUNTIME_DIR": str(workdir / "jupyter"),
            "JUPYTER_DATA_DIR": str(workdir / "jupyter"),
            "XDG_RUNTIME_DIR": str(workdir),
            "PYTHONPATH": str(workdir),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        # a kernel spec of this interpreter only, whatever the machine has installed
        spec_dir = workdir / "kernels" / "reloadctl-test"
        spec_dir.mkdir(parents=True)
        argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        spec = {"argv": argv, "display_name": "reloadctl test", "language": "python"}
        (spec_dir / "kernel.json").write_text(json.dumps(spec))
        specs = KernelSpecManager(
            kernel_dirs=[str(workdir / "kernels")], ensure_native_kernel=False
        )
        # unix sockets (ipc) rather than TCP ports: nothing listens on the network
        self.manager = KernelManager(
            kernel_name="reloadctl-test",
            kernel_spec_manager=specs,
            transport="ipc",
            ip=str(workdir / "jupyter" / "kernel-ipc"),
        )
        self.manager.connection_file = str(workdir / "jupyter" / "kernel.json")
        self.manager.start_kernel(env=self.env, cwd=str(workdir))
        self.client = self.manager.blocking_client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=30)

    def run(self, code: str) -> tuple[str, str]:
        """Execute one cell; returns (stdout, stderr) of the cell, error tracebacks in stderr."""
        out: list[str] = []
        err: list[str] = []

        def hook(msg: dict[str, Any]) -> None:
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                (out if content["name"] == "stdout" else err).append(content["text"])
            elif kind in {"execute_result", "display_data"}:
                out.append(content["data"].get("text/plain", "") + "\n")
            elif kind == "error":
                err.append("\n".join(content["traceback"]))

        reply = self.client.execute_interactive(code, output_hook=hook, timeout=30)
        if reply["content"]["status"] != "ok":
            err.append(f"status {reply['content']['status']}")
        return "".join(out), "".join(err)

    def shutdown(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


@pytest.fixture
def kernel() -> Iterator[Kernel]:
    with short_tmpdir() as d:
        (d / "ipythondir").mkdir()
        (d / "jupyter").mkdir()
        k = Kernel(d)
        try:
            yield k
        finally:
            k.shutdown()


def test_autoreload_in_a_kernel_runs_the_edited_code(kernel: Kernel) -> None:
    mod = kernel.workdir / "model.py"
    mod.write_text("class Model:\n    def predict(self):\n        return 'v1'\n")
    assert kernel.run("%load_ext reloadctl.ipython") == ("", "")
    assert kernel.run("%autoreload 2") == ("", "")
    kernel.run("from model import Model\nm = Model()")
    assert kernel.run("print(m.predict())")[0] == "v1\n"

    mod.write_text("class Model:\n    def predict(self):\n        return 'v2'\n")
    out, err = kernel.run("print(m.predict(), type(m) is Model)")
    assert (out, err) == ("v2 True\n", "")

    mod.write_text("class Model:\n    def predict(self):\n        return (\n")
    out, err = kernel.run("print(m.predict())")
    assert out == "v2\n"
    assert f"[autoreload of model failed: {mod}:3: SyntaxError" in err
    assert kernel.run("print(m.predict())") == ("v2\n", "")  # no repeat until a save


def test_reloadctl_cli_patches_the_kernel_through_its_agent(kernel: Kernel) -> None:
    mod = kernel.workdir / "pipeline.py"
    mod.write_text("def step():\n    return 'old'\n")
    kernel.run("%load_ext reloadctl.ipython")
    out, err = kernel.run("%reloadctl agent")
    assert err == ""
    assert out.startswith(f"reloadctl agent listening at unix://{kernel.workdir}/reloadctl/")
    kernel.run("import pipeline\nfrom pipeline import step")
    assert kernel.run("print(step())")[0] == "old\n"

    cli_env = {**kernel.env, "HOME": str(kernel.workdir)}
    ps = subprocess.run(
        [RELOADCTL, "ps", "-o", "json"],
        check=False,
        capture_output=True,
        text=True,
        env=cli_env,
        timeout=60,
    )
    assert ps.returncode == 0, ps.stderr
    pid = int(kernel.run("import os; print(os.getpid())")[0])
    assert str(pid) in ps.stdout

    mod.write_text("def step():\n    return 'new'\n")
    reload = subprocess.run(
        [RELOADCTL, "reload", "--local", "pipeline", "-o", "ndjson"],
        check=False,
        capture_output=True,
        text=True,
        env=cli_env,
        timeout=60,
    )
    assert reload.returncode == 0, reload.stdout + reload.stderr
    records = [json.loads(line) for line in reload.stdout.splitlines()]
    assert [r["status"] for r in records if "module" in r] == ["reloaded"]
    # no autoreload is on in this kernel: the CLI alone patched it
    assert kernel.run("print(step(), pipeline.step is step)") == ("new True\n", "")

    out, _ = kernel.run("%reloadctl status")
    assert f"pid {pid}" in out
    assert "agent: unix://" in out
    assert "pipeline: 1 reload(s)" in out
