"""The repository manager: control modes, polling, the load/unload API, failures, stores."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import nereid
import numpy as np
import pytest
from nereid.errors import (
    InternalError,
    InvalidArgumentError,
    NereidError,
    NotFoundError,
    UnavailableError,
)
from nereid.lifecycle.store import LocalStore
from nereid.testing import ModelRepositoryBuilder, make_request

IDENTITY = """
backend: "identity"
max_batch_size: 8
input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ {dims} ] }} ]
output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ {dims} ] }} ]
{extra}
"""


def identity(dims: str = "-1", extra: str = "") -> str:
    return IDENTITY.format(dims=dims, extra=extra)


async def infer(server, name: str, version: int = -1, width: int = 2):
    x = np.arange(width, dtype=np.float32).reshape(1, width)
    response = await server.api.infer(
        make_request(name, {"INPUT0": x}, model_version=version)
    ).single()
    np.testing.assert_array_equal(response.as_numpy("OUTPUT0"), x)
    return response


def states(server) -> dict[tuple[str, str | None], str | None]:
    return {(r["name"], r.get("version")): r.get("state") for r in server.api.repository_index()}


async def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


# -- none mode, failures, readiness ---------------------------------------------------------------


async def test_none_mode_loads_everything_and_refuses_the_api(start_server, model_repository):
    model_repository.identity("a")
    model_repository.identity("b")
    server = await start_server()
    await infer(server, "a")
    await infer(server, "b")
    assert server.api.repository_index() == [
        {"name": "a", "version": "1", "state": "READY"},
        {"name": "b", "version": "1", "state": "READY"},
    ]
    assert server.api.repository_index(ready_only=True) == server.api.repository_index()
    with pytest.raises(UnavailableError, match="not allowed if polling is enabled"):
        await server.api.load_model("a")
    with pytest.raises(UnavailableError, match="not allowed if polling is enabled"):
        await server.api.unload_model("a")


async def test_broken_models_beside_working_ones(start_server, model_repository):
    model_repository.identity("good")
    model_repository.add("bad_syntax", "backend: 'identity' max_batch_size: {")
    model_repository.add("no_backend", identity().replace('"identity"', '"nonexistent"'))
    model_repository.add("bad_dims", identity(dims="0"))
    server = await start_server(exit_on_error=False)
    await infer(server, "good")
    index = {(r["name"], r.get("version")): r for r in server.api.repository_index()}
    assert index[("good", "1")]["state"] == "READY"
    assert index[("bad_syntax", None)]["state"] == "UNAVAILABLE"
    assert "config.pbtxt" in index[("bad_syntax", None)]["reason"]
    assert index[("no_backend", "1")]["state"] == "UNAVAILABLE"
    assert "backend 'nonexistent' is not installed" in index[("no_backend", "1")]["reason"]
    assert "dims" in index[("bad_dims", "1")]["reason"]
    with pytest.raises(UnavailableError, match="no available versions"):
        await infer(server, "no_backend")
    with pytest.raises(NotFoundError):
        await infer(server, "nothing")
    assert server.api.is_live()
    assert not server.api.is_ready()  # --strict-readiness (the default)
    server.options.strict_readiness = False
    assert server.api.is_ready()


async def test_exit_on_error_fails_the_start(start_server, model_repository):
    model_repository.identity("good")
    model_repository.add("no_backend", identity().replace('"identity"', '"nonexistent"'))
    with pytest.raises(NereidError, match="nonexistent"):
        await start_server()


async def test_missing_repository_fails_the_start(start_server, tmp_path):
    with pytest.raises(NotFoundError, match="no such directory"):
        await start_server(tmp_path / "absent")


# -- poll mode ------------------------------------------------------------------------------------


async def test_poll_once_applies_every_kind_of_change(start_server, model_repository):
    model_repository.identity("kept")
    model_repository.identity("changed")
    model_repository.identity("removed")
    server = await start_server(model_control_mode="poll", repository_poll_secs=3600)
    kept = server.api.model("kept")
    old_changed = server.api.model("changed")
    with pytest.raises(UnavailableError, match="polling"):
        await server.api.load_model("kept")

    model_repository.identity("added")
    model_repository.add("kept", versions={2: {}})  # a new version: latest 1 moves to 2
    model_repository.add("changed", identity(extra='parameters { key: "k" value: { } }'))
    shutil.rmtree(model_repository.root / "removed")
    await server.repository.poll_once()

    await infer(server, "added")
    assert (await infer(server, "kept")).model_version == "2"
    assert server.api.model("kept", 2) is not kept
    new_changed = server.api.model("changed")
    assert new_changed is not old_changed and "k" in new_changed.config.parameters
    assert old_changed.accepting is False
    with pytest.raises(NotFoundError):
        await infer(server, "removed")
    await server.repository.poll_once()  # settles the background unloads
    await wait_for(lambda: states(server).get(("kept", "1")) == "UNAVAILABLE")
    assert states(server) == {
        ("added", "1"): "READY",
        ("changed", "1"): "READY",
        ("kept", "1"): "UNAVAILABLE",
        ("kept", "2"): "READY",
    }


async def test_poll_once_without_changes_reloads_nothing(start_server, model_repository):
    model_repository.identity("m")
    model_repository.add("broken", identity().replace('"identity"', '"nonexistent"'))
    server = await start_server(
        model_control_mode="poll", repository_poll_secs=0, exit_on_error=False
    )
    loaded = server.api.model("m")
    await server.repository.poll_once()
    assert server.api.model("m") is loaded
    assert states(server)[("broken", "1")] == "UNAVAILABLE"


async def test_poll_loop_picks_up_a_new_model(start_server, model_repository):
    model_repository.identity("first")
    server = await start_server(model_control_mode="poll", repository_poll_secs=0.05)
    model_repository.identity("second")
    await wait_for(lambda: server.api.model_ready("second"))
    await infer(server, "second")
    shutil.rmtree(model_repository.root / "second")
    await wait_for(lambda: all(name != "second" for name, _ in states(server)))
    with pytest.raises(NotFoundError):
        server.api.model("second")


async def test_poll_reload_failure_keeps_the_old_version(start_server, model_repository):
    model_repository.identity("m")
    server = await start_server(model_control_mode="poll", repository_poll_secs=0)
    loaded = server.api.model("m")
    model_repository.add("m", identity(dims="0"))
    await server.repository.poll_once()
    assert server.api.model("m") is loaded
    await infer(server, "m")
    assert server.api.is_ready()


# -- explicit mode --------------------------------------------------------------------------------


async def test_explicit_mode_loads_what_it_is_told(start_server, model_repository):
    model_repository.identity("a")
    model_repository.identity("b")
    model_repository.identity("c")
    server = await start_server(model_control_mode="explicit", load_model=["a"])
    assert states(server) == {("a", "1"): "READY", ("b", None): None, ("c", None): None}
    assert {"name": "b"} in server.api.repository_index()
    with pytest.raises(NotFoundError):
        await infer(server, "b")

    await server.api.load_model("b")
    await infer(server, "b")
    loaded = server.api.model("b")
    await server.api.load_model("b")  # nothing changed: nothing reloaded
    assert server.api.model("b") is loaded

    await server.api.unload_model("a")
    assert states(server)[("a", "1")] == "UNAVAILABLE"
    assert server.api.repository_index()[0] == {
        "name": "a",
        "version": "1",
        "state": "UNAVAILABLE",
        "reason": "unloaded",
    }
    with pytest.raises(UnavailableError, match="no available versions"):
        await infer(server, "a")
    assert server.api.is_ready()  # an unloaded model does not count against readiness
    await server.api.unload_model("c")  # never loaded: nothing to do, as in Triton
    with pytest.raises(InternalError, match="failed to poll from model repository"):
        await server.api.load_model("absent")


async def test_explicit_start_with_star_and_unknown_names(start_server, model_repository):
    model_repository.identity("a")
    model_repository.identity("b")
    server = await start_server(model_control_mode="explicit", load_model=["*"])
    assert states(server) == {("a", "1"): "READY", ("b", "1"): "READY"}
    with pytest.raises(InternalError, match="'absent'"):
        await start_server(model_control_mode="explicit", load_model=["a", "absent"])


async def test_load_with_a_config_override(start_server, model_repository):
    model_repository.identity("m", dims="[ 2 ]")
    server = await start_server(model_control_mode="explicit", load_model=["m"])
    old = server.api.model("m")
    override = {
        "backend": "identity",
        "max_batch_size": 0,
        "input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [1, 3]}],
        "output": [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [1, 3]}],
    }
    await server.api.load_model("m", config=json.dumps(override))
    assert server.api.model("m") is not old
    assert server.api.model_config("m").max_batch_size == 0
    await infer(server, "m", width=3)
    with pytest.raises(InvalidArgumentError, match="invalid config JSON"):
        await server.api.load_model("m", config="{not json")
    with pytest.raises(InvalidArgumentError, match="dims"):
        bad = {**override, "output": [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [0]}]}
        await server.api.load_model("m", config=json.dumps(bad))
    await infer(server, "m", width=3)  # failed reloads left it serving
    await server.api.load_model("m")  # back to config.pbtxt
    await infer(server, "m", width=2)


async def test_load_from_api_payloads(start_server, model_repository):
    model_repository.identity("present")
    server = await start_server(model_control_mode="explicit")
    config = json.dumps(
        {
            "backend": "identity",
            "max_batch_size": 4,
            "input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [-1]}],
            "output": [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [-1]}],
        }
    )
    files = {"file:1/model.bin": b"weights", "file:1/sub/extra.txt": b"more"}
    await server.api.load_model("payload", config=config, files=files)
    await infer(server, "payload")
    model = server.api.model("payload")
    assert (model.path / "model.bin").read_bytes() == b"weights"
    assert (model.path / "sub" / "extra.txt").read_bytes() == b"more"
    assert ("payload", "1") in states(server)
    folder = model.path.parent.parent

    # a new payload replaces the old one; the old folder goes once its version is unloaded
    await server.api.load_model("payload", config=config, files={"1/model.bin": b"v2"})
    new = server.api.model("payload")
    assert (new.path / "model.bin").read_bytes() == b"v2"
    await wait_for(lambda: not folder.exists())
    await server.api.unload_model("payload")
    await wait_for(lambda: not new.path.exists())

    with pytest.raises(InvalidArgumentError, match="'config' must be given"):
        await server.api.load_model("payload", files={"1/model.bin": b""})


@pytest.mark.parametrize(
    "path", ["../escaped.bin", "1/../../escaped.bin", "/tmp/escaped.bin", "", "1/.."]
)
async def test_payload_paths_outside_the_model_folder_are_refused(
    start_server, model_repository, path
):
    server = await start_server(model_control_mode="explicit")
    config = json.dumps({"backend": "identity"})
    with pytest.raises(InvalidArgumentError, match="not inside the model folder"):
        await server.api.load_model("evil", config=config, files={f"file:{path}": b"x"})
    assert not Path("/tmp/escaped.bin").exists()
    assert not (model_repository.root.parent / "escaped.bin").exists()
    assert all(row["name"] != "evil" for row in server.api.repository_index())


async def test_payload_model_names_that_are_not_one_folder_are_refused(start_server, tmp_path):
    """The model name names the folder the payload is written to: one that climbs out or is
    absolute would write anywhere the server can."""
    server = await start_server(model_control_mode="explicit")
    config = json.dumps({"backend": "identity"})
    outside = f"nereid-escaped-{uuid.uuid4().hex[:12]}"
    names = [f"../{outside}", str(tmp_path / outside), "..", ".", "a/b", ""]
    for name in names:
        with pytest.raises(InvalidArgumentError, match="needs a name that is one folder name"):
            await server.api.load_model(name, config=config, files={"file:1/m.bin": b"x"})
    assert not (Path(tempfile.gettempdir()) / outside).exists()
    assert not (tmp_path / outside).exists()
    assert server.api.repository_index() == []


# -- repositories and namespaces ------------------------------------------------------------------


async def test_same_name_in_two_repositories(tmp_path):
    first = ModelRepositoryBuilder(tmp_path / "one")
    second = ModelRepositoryBuilder(tmp_path / "two")
    first.identity("twice", dims="[ 2 ]")
    second.identity("twice", dims="[ 3 ]")
    first.identity("only_here")
    repos = [str(first.root), str(second.root)]

    async with nereid.Server(repos, exit_on_error=False) as server:
        await infer(server, "only_here")
        row = next(r for r in server.api.repository_index() if r["name"] == "twice")
        assert row["state"] == "UNAVAILABLE" and "several repositories" in row["reason"]

    async with nereid.Server(repos, model_namespacing=True) as spaced:
        await infer(spaced, "only_here")
        assert [r["name"] for r in spaced.api.repository_index()].count("twice") == 2
        with pytest.raises(InvalidArgumentError, match="ambiguous"):
            await infer(spaced, "twice")


async def test_model_config_name(start_server, model_repository):
    model_repository.identity("m")
    model_repository.add("m", files={"configs/small.pbtxt": identity(dims="1")})
    model_repository.identity("plain")
    server = await start_server(model_config_name="small")
    assert list(server.api.model_config("m").input[0].dims) == [1]
    assert list(server.api.model_config("plain").input[0].dims) == [-1]


class MemoryStore:
    """A store whose models live in a dict: each fetch writes a fresh copy to local disk."""

    models: dict[str, dict[str, str]] = {}

    def __init__(self, location: str) -> None:
        self.location = location
        self.fetches = 0

    def list_models(self) -> list[str]:
        return sorted(self.models)

    def local_path(self, model: str) -> Path:
        import tempfile

        self.fetches += 1
        root = Path(tempfile.mkdtemp(prefix="nereid-memstore-")) / model
        for relative, text in self.models[model].items():
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            (root / relative).write_text(text)
        return root

    def signature(self, model: str) -> str:
        return json.dumps(self.models[model], sort_keys=True)


class MemoryStorePlugin:
    @nereid.hookimpl
    def register_repository_stores(self, registry):
        registry.add("mem", MemoryStore)


async def test_a_repository_store_plugin(start_server, monkeypatch):
    monkeypatch.setattr(
        MemoryStore, "models", {"remote": {"config.pbtxt": identity(), "1/.keep": ""}}
    )
    server = await start_server("mem://bucket", plugins=[MemoryStorePlugin()])
    await infer(server, "remote")
    assert isinstance(server.repository.stores[0], MemoryStore)
    with pytest.raises(UnavailableError, match="no repository store for 'gs://'"):
        await start_server("gs://bucket/models")


def test_local_store_contract(tmp_path):
    builder = ModelRepositoryBuilder(tmp_path / "repo")
    builder.identity("m")
    store = LocalStore(f"file://{builder.root}")
    assert isinstance(store, nereid.lifecycle.store.RepositoryStore)
    assert store.list_models() == ["m"]
    assert store.local_path("m") == builder.root / "m"
    before = store.signature("m")
    (builder.root / "m" / "2").mkdir()  # an empty version folder is a change
    assert store.signature("m") != before
    with pytest.raises(NotFoundError):
        store.local_path("absent")
