"""``nereid serve``: tritonserver's flags, logging, and a graceful stop on SIGTERM."""

from __future__ import annotations

import functools
import logging
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest
from nereid.cli import _plugin_system
from nereid.logsettings import LogSettings
from nereid.options import build_parser, finish_options
from nereid.testing import ModelRepositoryBuilder

SLOW = 'parameters { key: "execute_delay_ms" value: { string_value: "%d" } }'


class Process:
    """A child process whose stderr is read line by line on a thread."""

    def __init__(self, args: list[str]) -> None:
        self.popen = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.popen.stderr:
            self._queue.put(line)
        self._queue.put(None)

    def wait_for_line(self, text: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                self.popen.kill()
                raise AssertionError(f"no line with {text!r} in:\n{''.join(self.lines)}")
            self.lines.append(line)

    def finish(self, timeout: float = 20.0) -> tuple[int, str]:
        rc = self.popen.wait(timeout)
        while (line := self._queue.get(timeout=timeout)) is not None:
            self.lines.append(line)
        return rc, "".join(self.lines)


def serve(*args: str) -> list[str]:
    return [sys.executable, "-m", "nereid.cli", "serve", "--disable-plugin-autoload", *args]


@pytest.fixture
def repo(tmp_path) -> ModelRepositoryBuilder:
    builder = ModelRepositoryBuilder(tmp_path / "models")
    builder.identity("slow", dims="[ 2 ]", extra=SLOW % 600)
    return builder


# -- SIGTERM --------------------------------------------------------------------------------------

DRAIN_SCRIPT = """
import asyncio
import sys
from pathlib import Path

import numpy as np
import nereid
from nereid.testing import make_request

result = Path(sys.argv[2])


class Requester:
    task = None

    @nereid.hookimpl
    def server_started(self, server):
        async def send():
            x = np.ones((1, 2), np.float32)
            stream = server.api.infer(make_request("slow", {"INPUT0": x}))
            result.with_suffix(".sent").write_text("sent")
            response = await stream.single()
            result.write_text(f"ok {response.as_numpy('OUTPUT0').tolist()}")

        Requester.task = asyncio.get_running_loop().create_task(send())


async def main():
    server = nereid.Server(sys.argv[1], plugins=[Requester()])
    await server.serve_forever()
    await Requester.task


asyncio.run(main())
"""


def test_sigterm_drains_the_request_in_flight(tmp_path, repo):
    script = tmp_path / "serve_one.py"
    script.write_text(DRAIN_SCRIPT)
    result = tmp_path / "result.txt"
    process = Process([sys.executable, str(script), str(repo.root), str(result)])
    deadline = time.monotonic() + 20
    while not result.with_suffix(".sent").exists():
        assert process.popen.poll() is None, process.finish()[1]
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.05)  # the request is executing (600 ms)
    assert not result.exists()
    process.popen.send_signal(signal.SIGTERM)
    rc, log = process.finish()
    assert rc == 0, log
    assert result.read_text() == "ok [[1.0, 1.0]]"
    assert "signal received, stopping" in log
    assert "drained in-flight requests" in log


def test_nereid_serve_stops_on_sigterm(repo):
    process = Process(
        serve(
            "--model-repository",
            str(repo.root),
            "--model-control-mode=explicit",
            "--load-model",
            "slow",
            "--exit-timeout-secs=5",
            "--strict-readiness",
            "false",
            "--log-verbose=1",
        )
    )
    process.wait_for_line("model 'slow' version 1: READY")
    process.popen.send_signal(signal.SIGTERM)
    rc, log = process.finish()
    assert rc == 0, log
    assert "signal received, stopping: waiting up to 5.0s" in log
    assert "successfully unloaded 'slow' version 1" in log


STUCK_WARMUP = (
    SLOW % 100_000
    + ' model_warmup [ { name: "w" batch_size: 1 inputs { key: "INPUT0" value: '
    + "{ data_type: TYPE_FP32 dims: [ 2 ] zero_data: true } } } ]"
)


def test_model_code_that_never_returns_cannot_keep_the_server_from_exiting(tmp_path):
    """A warm-up stuck in execute holds the start-up (and would hold the stop) for good: the
    process still ends --exit-timeout-secs (+ the unload margin) after the signal, status 1."""
    repo = ModelRepositoryBuilder(tmp_path / "models")
    repo.identity("stuck", dims="[ 2 ]", extra=STUCK_WARMUP)
    process = Process(serve("--model-repository", str(repo.root), "--exit-timeout-secs=1"))
    process.wait_for_line("loading: stuck:1")
    time.sleep(0.2)  # into the warm-up
    signalled = time.monotonic()
    process.popen.send_signal(signal.SIGTERM)
    rc, log = process.finish(timeout=30)
    waited = time.monotonic() - signalled
    assert rc == 1, log
    assert "exit timeout expired: still stopping 6.0s after the signal" in log
    assert waited >= 6.0  # the exit timeout and the unload margin were given


def test_nereid_serve_keeps_serving_beside_a_broken_model_unless_exit_on_error(repo):
    repo.add("broken", "backend: 'nonexistent'")
    rc, log = Process(serve("--model-repository", str(repo.root))).finish()
    assert rc == 1
    assert "failed to start the server" in log and "nonexistent" in log

    process = Process(serve("--model-store", str(repo.root), "--exit-on-error=false"))
    process.wait_for_line("model 'slow' version 1: READY")
    process.popen.send_signal(signal.SIGINT)
    rc, log = process.finish()
    assert rc == 0, log
    assert "model 'broken' version 1: UNAVAILABLE" in log


def test_unknown_flag_is_an_error_naming_it(repo):
    rc, log = Process(serve("--model-repository", str(repo.root), "--no-such-flag=1")).finish()
    assert rc == 2
    assert "unrecognized arguments: --no-such-flag=1" in log
    rc, log = Process(serve()).finish()
    assert rc == 2 and "--model-repository must be specified" in log


# -- flags ----------------------------------------------------------------------------------------


@functools.cache
def parser():
    return build_parser(_plugin_system(["--disable-plugin-autoload"]))


def parse(*argv: str):
    return finish_options(parser().parse_args(argv))


@pytest.mark.parametrize(
    "flag",
    [
        "exit_on_error",
        "strict_readiness",
        "model_namespacing",
        "log_info",
        "log_warning",
        "log_error",
    ],
)
@pytest.mark.parametrize(("text", "value"), [("true", True), ("false", False), ("0", False)])
def test_boolean_flags_take_a_value_in_both_forms(flag, text, value):
    name = "--" + flag.replace("_", "-")
    assert getattr(parse(f"{name}={text}"), flag) is value
    assert getattr(parse(name, text), flag) is value


def test_flags_mean_what_tritonservers_do():
    options = parse(
        "--model-repository=/a",
        "--model-store",
        "/b",
        "--model-control-mode=EXPLICIT",
        "--load-model=x",
        "--load-model",
        "y",
        "--repository-poll-secs=5",
        "--model-config-name=alt",
        "--backend-config=identity,k=v",
        "--model-load-thread-count=2",
        "--model-load-retry-count=3",
        "--exit-timeout-secs=7",
        "--id=mine",
        "--log-verbose=2",
        "--log-format=ISO8601",
        "--log-file=/tmp/x.log",
    )
    assert options.model_repository == ["/a", "/b"]
    assert options.model_control_mode == "explicit"
    assert options.load_model == ["x", "y"]
    assert (options.repository_poll_secs, options.exit_timeout_secs) == (5, 7)
    assert options.model_config_name == "alt" and options.id == "mine"
    assert options.backend_config == ["identity,k=v"]
    assert (options.model_load_thread_count, options.model_load_retry_count) == (2, 3)
    assert (options.log_verbose, options.log_format, options.log_file) == (
        2,
        "ISO8601",
        "/tmp/x.log",
    )
    defaults = parse()
    assert defaults.exit_on_error and defaults.strict_readiness
    assert defaults.exit_timeout_secs == 30 and defaults.model_control_mode == "none"
    assert not defaults.disable_auto_complete_config
    assert parse("--disable-auto-complete-config").disable_auto_complete_config
    assert parse("--strict-model-config=true").disable_auto_complete_config
    assert not parse("--strict-model-config=false").disable_auto_complete_config
    with pytest.raises(SystemExit):
        parse("--exit-on-error=maybe")
    with pytest.raises(SystemExit):
        parse("--model-control-mode=sometimes")
    with pytest.raises(SystemExit):  # a frontend that is not loaded adds no flags
        parse("--http-port=8000")


# -- logging --------------------------------------------------------------------------------------


def test_log_settings_switch_each_severity(capsys, tmp_path):
    log = logging.getLogger("nereid.test_serve_cli")
    settings = LogSettings()
    try:
        settings.update({"log_info": False})
        log.info("hidden info")
        log.warning("shown warning")
        settings.update({"log_info": True, "log_warning": False, "log_verbose_level": 0})
        log.info("shown info")
        log.warning("hidden warning")
        log.debug("hidden debug")
        settings.update({"log_warning": True, "log_verbose_level": 1, "log_format": "ISO8601"})
        log.debug("shown debug")
        err = capsys.readouterr().err
        assert "shown warning" in err and "shown info" in err and "shown debug" in err
        assert "hidden" not in err
        assert err.splitlines()[0].startswith("W") and " nereid.test_serve_cli] " in err
        assert "Z D " in err.splitlines()[-1]  # ISO8601: 2024-05-04T13:01:02Z D <pid> ...
        log_file = tmp_path / "server.log"
        settings.update({"log_file": str(log_file)})
        log.info("to the file")
        assert "to the file" in log_file.read_text()
        assert "to the file" not in capsys.readouterr().err
    finally:
        LogSettings().apply()
