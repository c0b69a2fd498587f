"""reloadctl.agent.push and pushfinder in process: the engine applies pushed source through the
finder, a failed batch leaves no pushed entry behind, a dry run leaves none either, and the
checks run before a push is queued. The wire end to end is in tests/e2e/test_push_e2e.py."""

from __future__ import annotations

import hashlib
import importlib
import inspect
import linecache
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import msgpack
import pytest

from reloadctl.agent import engine
from reloadctl.agent import push as agent_push
from reloadctl.agent.config import AgentConfig, accept_push_mode, build_config
from reloadctl.agent.pushfinder import FINDER, PushedLoader
from reloadctl.agent.verify import verify_or_roll_back
from reloadctl.errors import ConfigError, RemoteProtocolError
from reloadctl.proto import codec
from reloadctl.proto.messages import ErrorReply, PushedSource, ReloadRequest
from reloadctl.results import ModuleResult


def source(module: str, text: str, *, package: bool = False) -> PushedSource:
    path = module.replace(".", "/") + ("/__init__.py" if package else ".py")
    return PushedSource(module, path, text, hashlib.sha256(text.encode()).hexdigest(), package)


@pytest.fixture
def pkg(tmp_path: Path) -> Iterator[str]:
    """A package ``name`` on disk (release 1), imported; forgotten afterwards."""
    name = f"rc_push_{uuid.uuid4().hex[:8]}"
    (tmp_path / name).mkdir()
    (tmp_path / name / "__init__.py").write_text(f"from {name} import core\n")
    (tmp_path / name / "core.py").write_text("def version():\n    return 1\n")
    sys.path.insert(0, str(tmp_path))
    importlib.import_module(f"{name}.core")
    try:
        yield name
    finally:
        sys.path.remove(str(tmp_path))
        for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            del sys.modules[key]
            FINDER.forget(key)
        while FINDER in sys.meta_path:
            sys.meta_path.remove(FINDER)


def request(name: str, core: str, **kwargs: object) -> ReloadRequest:
    files = (
        source(name, f"from {name} import core\n", package=True),
        source(f"{name}.core", core),
        *kwargs.pop("extra", ()),  # type: ignore[misc]
    )
    return ReloadRequest((name,), push=files, push_trees=(name,), **kwargs)  # type: ignore[arg-type]


def test_pushed_source_is_applied_and_shown_by_inspect_and_linecache(pkg: str) -> None:
    core = sys.modules[f"{pkg}.core"]
    held = core.version
    text = f"from {pkg}.extra import TWO\n\n\ndef version():\n    return TWO\n"
    extra = (source(f"{pkg}.extra", "TWO = 2\n"),)
    results = agent_push.apply(engine, request(pkg, text, extra=extra), None)
    # the package's __init__ is the same text as on disk: proven unchanged, not re-run
    assert {r.module: r.status for r in results} == {pkg: "unchanged", f"{pkg}.core": "reloaded"}
    assert held() == 2
    assert isinstance(core.__loader__, PushedLoader)
    assert core.__file__.startswith("push:") and "TWO" in inspect.getsource(held)
    assert linecache.cache[core.__file__][2][-1] == "    return TWO\n"
    linecache.clearcache()  # served again from the loader
    assert "return TWO" in "".join(linecache.getlines(held.__code__.co_filename, vars(core)))
    assert importlib.import_module(f"{pkg}.extra").TWO == 2


def test_a_failed_push_leaves_no_pushed_entry(pkg: str) -> None:
    core = sys.modules[f"{pkg}.core"]
    extra = (source(f"{pkg}.extra", "TWO = 2\n"),)
    text = f"from {pkg}.extra import TWO\n\n\ndef version():\n    return TWO\n\n\n1 / 0\n"
    results = agent_push.apply(engine, request(pkg, text, extra=extra), None)
    assert {r.module: r.status for r in results}[f"{pkg}.core"] == "failed"
    assert core.version() == 1 and not isinstance(core.__loader__, PushedLoader)
    assert FINDER.get(f"{pkg}.core") is None and FINDER.get(f"{pkg}.extra") is None
    assert f"{pkg}.extra" not in sys.modules
    assert not [k for k in linecache.cache if k.startswith("push:") and f"/{pkg}/" in k]
    assert importlib.util.find_spec(f"{pkg}.extra") is None


def test_a_dry_run_plans_with_the_pushed_source_and_keeps_nothing(pkg: str) -> None:
    text = "def version():\n    return 2\n\n\ndef added():\n    pass\n"
    results = agent_push.apply(engine, request(pkg, text, dry_run=True), None)
    core = next(r for r in results if r.module == f"{pkg}.core")
    assert core.status == "reloaded" and any(a.kind == "added" for a in core.actions)
    assert sys.modules[f"{pkg}.core"].version() == 1
    assert FINDER.get(f"{pkg}.core") is None


def _verify(spec: str) -> Callable[[list[ModuleResult]], list[ModuleResult]]:
    return lambda results: verify_or_roll_back(
        engine, spec, results, allow=None, past_deadline=lambda: False
    )


def test_a_push_whose_verify_fails_is_rolled_back_and_leaves_no_pushed_entry(pkg: str) -> None:
    core = sys.modules[f"{pkg}.core"]
    text = "def version():\n    return 2\n\n\ndef healthy():\n    return False\n"
    req = request(pkg, text, verify=f"{pkg}.core:healthy")
    results = agent_push.apply(engine, req, None, after=_verify(req.verify))
    by_module = {r.module: r for r in results}
    assert by_module[f"{pkg}.core"].status == "failed"
    assert by_module[f"{pkg}.core"].error is not None
    assert by_module[f"{pkg}.core"].error.type == "VerifyFailed"
    assert core.version() == 1 and not isinstance(core.__loader__, PushedLoader)
    assert FINDER.get(f"{pkg}.core") is None


def test_a_push_whose_verify_passes_is_kept(pkg: str) -> None:
    core = sys.modules[f"{pkg}.core"]
    text = "def version():\n    return 2\n\n\ndef healthy():\n    return True\n"
    req = request(pkg, text, verify=f"{pkg}.core:healthy")
    results = agent_push.apply(engine, req, None, after=_verify(req.verify))
    assert {r.module: r.status for r in results}[f"{pkg}.core"] == "reloaded"
    assert core.version() == 2 and FINDER.get(f"{pkg}.core") is not None


def test_rollback_after_a_push_serves_the_disk_version_again(pkg: str) -> None:
    core = sys.modules[f"{pkg}.core"]
    agent_push.apply(engine, request(pkg, "def version():\n    return 2\n"), None)
    assert core.version() == 2 and FINDER.get(f"{pkg}.core") is not None
    results = engine.rollback_modules([f"{pkg}.core"])
    agent_push.after_rollback(results)
    assert core.version() == 1 and FINDER.get(f"{pkg}.core") is None
    patched = {p.module: p for p in agent_push.annotate(engine.patched_modules())}
    assert patched[f"{pkg}.core"].origin == "disk"


def _config(accept: str, allow: tuple[str, ...] | None = None) -> AgentConfig:
    mode: bool | str = {"": False, "memory": True, "write": "write"}[accept]
    return build_config("unix:///tmp/x.sock", allow=allow, accept_push=mode)


def _check(config: AgentConfig, req: ReloadRequest) -> object:
    return agent_push.check(config, req, peer="test", request_id="r1")


def test_check_refuses_and_says_how(pkg: str) -> None:
    good = request(pkg, "def version():\n    return 2\n")
    refused = _check(_config(""), good)
    assert isinstance(refused, ErrorReply) and refused.code == "forbidden"
    assert "accept_push=True" in refused.message and "--accept-push" in refused.message
    assert _check(_config("memory"), good) is None
    write = _check(_config("memory"), ReloadRequest(good.modules, push=good.push, write=True))
    assert isinstance(write, ErrorReply) and 'accept_push="write"' in write.message
    outside = _check(_config("memory", allow=("other.*",)), good)
    assert isinstance(outside, ErrorReply) and "outside the agent's allow list" in outside.message


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (PushedSource("m", "m.py", "X = 1\n", "0" * 64), "does not match its sha256"),
        (PushedSource("m", "../m.py", "", hashlib.sha256(b"").hexdigest()), "not the file of"),
        (PushedSource("m-x", "m-x.py", "", hashlib.sha256(b"").hexdigest()), "dotted identifier"),
    ],
)
def test_check_rejects_a_malformed_push(bad: PushedSource, message: str) -> None:
    reply = _check(_config("write"), ReloadRequest(("m",), push=(bad,)))
    assert isinstance(reply, ErrorReply) and reply.code == "protocol" and message in reply.message


def test_accept_push_setting() -> None:
    assert accept_push_mode(None, {}) == ""
    assert accept_push_mode(None, {"RELOADCTL_AGENT_ACCEPT_PUSH": "1"}) == "memory"
    assert accept_push_mode(None, {"RELOADCTL_AGENT_ACCEPT_PUSH": "write"}) == "write"
    assert accept_push_mode(True, {"RELOADCTL_AGENT_ACCEPT_PUSH": "0"}) == "memory"
    with pytest.raises(ConfigError, match="must be 1, 0 or write"):
        accept_push_mode(None, {"RELOADCTL_AGENT_ACCEPT_PUSH": "maybe"})


def test_codec_carries_a_push_over_the_ordinary_cap_and_nothing_else() -> None:
    big = "X = '" + "x" * (codec.MAX_MESSAGE_BYTES + 10) + "'\n"
    req = ReloadRequest(("m",), push=(source("m", big),), push_trees=(), write=True)
    data = codec.encode(req)
    assert len(data) > codec.MAX_MESSAGE_BYTES
    assert codec.decode_request(data) == req
    # every other message keeps the ordinary cap, however it was packed
    body = {"code": "internal", "message": "x" * (codec.MAX_MESSAGE_BYTES + 10)}
    oversized = msgpack.packb({"v": codec.VERSION, "t": "error", "b": body})
    with pytest.raises(RemoteProtocolError, match="over the 1048576 byte limit"):
        codec.decode(oversized)
    with pytest.raises(RemoteProtocolError, match="over the"):
        codec.decode(b"\xc0" * (codec.MAX_PUSH_MESSAGE_BYTES + 1))


def test_rollback_from_one_push_to_the_one_before_serves_that_push(pkg: str) -> None:
    core = sys.modules[f"{pkg}.core"]
    two = "def version():\n    return 2\n"
    agent_push.apply(engine, request(pkg, two), None)
    agent_push.apply(engine, request(pkg, "def version():\n    return 3\n"), None)
    assert core.version() == 3
    agent_push.after_rollback(engine.rollback_modules([f"{pkg}.core"]))
    assert core.version() == 2
    served = FINDER.get(f"{pkg}.core")
    assert served is not None and served.text == two
    patched = {p.module: p for p in agent_push.annotate(engine.patched_modules())}
    digest = hashlib.sha256(two.encode()).hexdigest()
    assert patched[f"{pkg}.core"].origin == f"push:{digest[:12]}"
    assert patched[f"{pkg}.core"].diverged is True
    assert "return 2" in inspect.getsource(core.version)
