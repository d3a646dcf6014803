"""``--trace-config`` and the deprecated ``--trace-*`` flags."""

from __future__ import annotations

import argparse

import pytest
from nereid.errors import InvalidArgumentError
from nereid.options import build_parser
from nereid.plugins import PluginSettings, PluginSystem
from nereid_tracing.config import (
    DEFAULT_URL,
    TENSORS,
    TIMESTAMPS,
    parse_options,
    tracing_requested,
)


@pytest.fixture(scope="module")
def parser() -> argparse.ArgumentParser:
    system = PluginSystem(PluginSettings())
    system.load_entry_points()
    system.collect_registrations()
    return build_parser(system)


def parse(parser, *args: str):
    return parser.parse_args(["--model-repository", "m", *args])


def test_defaults_as_tritonserver(parser):
    options = parse(parser)
    assert not tracing_requested(options)
    config = parse_options(options)
    assert (config.level, config.rate, config.count, config.log_frequency) == (0, 1000, -1, 0)
    assert config.mode == "triton" and config.file == ""
    assert config.url == DEFAULT_URL
    assert config.resource_attributes() == {"service.name": "triton-inference-server"}
    assert (config.bsp_max_queue_size, config.bsp_schedule_delay) == (2048, 5000)
    assert config.bsp_max_export_batch_size == 512


def test_trace_config_entries(parser):
    options = parse(
        parser,
        "--trace-config", "triton,file=/tmp/t.json",
        "--trace-config", "triton,log-frequency=50",
        "--trace-config", "rate=100",
        "--trace-config", "level=TIMESTAMPS",
        "--trace-config", "level=TENSORS",
        "--trace-config", "count=7",
    )  # fmt: skip
    assert tracing_requested(options)
    config = parse_options(options)
    assert config.file == "/tmp/t.json" and config.log_frequency == 50
    assert (config.rate, config.count, config.level) == (100, 7, TIMESTAMPS | TENSORS)


def test_opentelemetry_entries(parser):
    options = parse(
        parser,
        "--trace-config", "mode=opentelemetry",
        "--trace-config", "opentelemetry,url=collector:4318",
        "--trace-config", "opentelemetry,resource=service.name=triton",
        "--trace-config", "opentelemetry,resource=service.version=1",
        "--trace-config", "opentelemetry,bsp_max_export_batch_size=16",
        "--trace-config", "opentelemetry,bsp_max_queue_size=32",
        "--trace-config", "opentelemetry,bsp_schedule_delay=10",
    )  # fmt: skip
    config = parse_options(options)
    assert config.mode == "opentelemetry"
    assert config.url == "http://collector:4318/v1/traces"
    assert config.resource_attributes() == {"service.name": "triton", "service.version": "1"}
    assert (config.bsp_max_export_batch_size, config.bsp_max_queue_size) == (16, 32)
    assert config.bsp_schedule_delay == 10


def test_deprecated_flags(parser):
    options = parse(
        parser,
        "--trace-file", "/tmp/x.json",
        "--trace-level", "TIMESTAMPS",
        "--trace-rate", "5",
        "--trace-count", "3",
        "--trace-log-frequency", "2",
    )  # fmt: skip
    assert tracing_requested(options)
    config = parse_options(options)
    assert (config.file, config.level, config.rate, config.count, config.log_frequency) == (
        "/tmp/x.json",
        TIMESTAMPS,
        5,
        3,
        2,
    )


@pytest.mark.parametrize(
    "entry",
    ["rate", "file=/x", "jaeger,url=x", "triton,url=x", "opentelemetry,file=x", "bogus=1"],
)
def test_malformed_entries_are_command_line_errors(parser, entry, capsys):
    with pytest.raises(SystemExit) as info:
        parse(parser, "--trace-config", entry)
    assert info.value.code == 2
    assert "--trace-config" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        (["rate=-1"], "out of range"),
        (["count=-2"], "out of range"),
        (["level=LOUD"], "invalid trace level"),
        (["mode=zipkin"], "invalid trace mode"),
        (["opentelemetry,resource=novalue"], "expected <key>=<value>"),
        (
            ["opentelemetry,bsp_max_queue_size=4", "opentelemetry,bsp_max_export_batch_size=8"],
            "bsp_max_export_batch_size",
        ),
    ],
)
def test_invalid_values(parser, entries, message):
    args = [arg for entry in entries for arg in ("--trace-config", entry)]
    with pytest.raises(InvalidArgumentError, match=message):
        parse_options(parse(parser, *args))
