"""The plugin and the flags: cheap import, option parsing, TLS, restricted protocols,
compression, header forwarding, client shared memory switched off, port handling."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import shutil
import struct
import subprocess
import sys
import time

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from grpc_testsupport import grpc_server
from nereid import InvalidArgumentError, UnavailableError
from nereid.plugins import PluginSystem
from nereid.testing import free_port, frontend_url
from nereid_grpc.frontend import create_frontend
from nereid_grpc.settings import GrpcSettings, parse_restricted_protocols
from tritonclient.utils import InferenceServerException


def _options(*argv: str) -> argparse.Namespace:
    from nereid.options import build_parser

    plugins = PluginSystem()
    plugins.load_entry_points()
    plugins.collect_registrations()
    return build_parser(plugins).parse_args(list(argv))


def _tensor(data):
    tensor = grpcclient.InferInput("INPUT0", list(data.shape), "FP32")
    tensor.set_data_from_numpy(data)
    return tensor


ROW = np.arange(16, dtype=np.float32).reshape(1, 16)


# -- the plugin --------------------------------------------------------------------------------


def test_plugin_module_does_not_import_grpc():
    code = (
        "import sys, nereid_grpc.plugin\n"
        "assert 'grpc' not in sys.modules, 'grpc imported'\n"
        "assert 'nereid_grpc.frontend' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_plugin_registers_the_frontend_and_its_flags():
    plugins = PluginSystem()
    plugins.load_entry_points()
    plugins.collect_registrations()
    entry = plugins.registries["frontend"].get("grpc")
    assert entry.target == "nereid_grpc.frontend:create_frontend"
    options = _options()
    assert options.grpc_port == 8001
    assert options.grpc_address == "0.0.0.0"
    assert options.allow_grpc is True
    assert options.reuse_grpc_port is False
    assert options.grpc_use_ssl is False
    assert options.grpc_keepalive_time == 7200000
    assert options.grpc_keepalive_timeout == 20000
    assert options.grpc_http2_max_pings_without_data == 2
    assert options.grpc_http2_min_recv_ping_interval_without_data == 300000
    assert options.grpc_http2_max_ping_strikes == 2
    assert options.grpc_infer_response_compression_level == "none"
    assert options.grpc_infer_allocation_pool_size == 8
    assert options.allow_client_shm is False
    options = _options(
        "--allow-grpc=false",
        "--grpc-port=9001",
        "--grpc-use-ssl",
        "--grpc-keepalive-permit-without-calls=true",
        "--grpc-restricted-protocol=health:k=v",
        "--grpc-restricted-protocol=inference,shared-memory:a=b",
        "--grpc-infer-response-compression-level=high",
    )
    assert options.allow_grpc is False and options.grpc_port == 9001
    assert options.grpc_use_ssl is True and options.grpc_keepalive_permit_without_calls is True
    assert options.grpc_restricted_protocol == ["health:k=v", "inference,shared-memory:a=b"]
    assert create_frontend(options) is None


def test_settings_from_options():
    settings = GrpcSettings.from_options(
        _options(
            "--grpc-address=::1",
            "--grpc-port=0",
            "--reuse-grpc-port=true",
            "--grpc-keepalive-time=1000",
            "--grpc-infer-response-compression-level=low",
            "--grpc-header-forward-pattern=^x-",
        )
    )
    assert settings.bind_address == "[::1]:0"
    unix = GrpcSettings.from_options(_options("--grpc-address=unix:///tmp/n.sock"))
    assert unix.bind_address == "unix:///tmp/n.sock:8001"
    channel = dict(settings.channel_options)
    assert channel["grpc.so_reuseport"] == 1
    assert channel["grpc.keepalive_time_ms"] == 1000
    assert channel["grpc.default_compression_level"] == 1
    assert channel["grpc.max_receive_message_length"] == 2**31 - 1
    assert settings.header_forward.search("x-trace")


@pytest.mark.parametrize(
    ("spec", "text"),
    [
        ("health", "expected '<protocol>"),
        ("health:k", "expected '<protocol>"),
        ("everything:k=v", "unknown restricted protocol 'everything'"),
    ],
)
def test_restricted_protocol_parse_errors(spec, text):
    with pytest.raises(InvalidArgumentError, match=text):
        parse_restricted_protocols([spec])


def test_restricted_protocol_group_given_twice():
    with pytest.raises(InvalidArgumentError, match="more than one"):
        parse_restricted_protocols(["health:a=b", "metadata,health:c=d"])
    restricted = parse_restricted_protocols(["inference,model-repository:Admin-Key=s3cret"])
    assert restricted["ModelInfer"].header == "triton-grpc-protocol-admin-key"
    assert restricted["RepositoryModelUnload"].value == "s3cret"
    assert "ServerLive" not in restricted


def test_bad_flags_are_reported():
    with pytest.raises(InvalidArgumentError, match="header-forward-pattern"):
        GrpcSettings.from_options(_options("--grpc-header-forward-pattern=("))
    with pytest.raises(InvalidArgumentError, match="needs --grpc-server-cert"):
        GrpcSettings.from_options(_options("--grpc-use-ssl=true"))
    with pytest.raises(InvalidArgumentError, match="cannot read --grpc-server-cert"):
        GrpcSettings.from_options(
            _options("--grpc-use-ssl", "--grpc-server-cert=/nope", "--grpc-server-key=/nope")
        )


# -- servers with flags ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_repo(tmp_path_factory):
    from grpc_testsupport import build_repository

    return build_repository(tmp_path_factory.mktemp("models"))


def _only(repo, *models, **options):
    return grpc_server(repo.root, model_control_mode="explicit", load_model=list(models), **options)


def test_port_in_use_is_an_error(small_repo):
    from nereid.inprocess import InProcessServer

    port = free_port()
    with _only(small_repo, "identity", grpc_port=port) as first:
        assert first.server.frontends["grpc"].port == port
        second = InProcessServer(
            str(small_repo.root),
            frontends=["grpc"],
            grpc_port=port,
            grpc_address="127.0.0.1",
            model_control_mode="explicit",
            log_info=False,
        )
        with pytest.raises(UnavailableError, match=f"Socket '127.0.0.1:{port}' already in use"):
            second.start()
        second.stop()


def test_restricted_protocols(small_repo):
    with _only(
        small_repo,
        "identity",
        "repeat",
        grpc_restricted_protocol=["inference,model-config:infer-key=letmein", "health:h=1"],
    ) as server:
        url = frontend_url(server, "grpc")
        with grpcclient.InferenceServerClient(url) as client:
            assert client.get_server_metadata().name == "nereid"  # not restricted
            with pytest.raises(InferenceServerException) as info:
                client.infer("identity", [_tensor(ROW)])
            assert info.value.status() == "StatusCode.UNAVAILABLE"
            assert info.value.message() == (
                "This protocol is restricted, expecting header 'triton-grpc-protocol-infer-key'"
            )
            with pytest.raises(InferenceServerException):
                client.infer(
                    "identity",
                    [_tensor(ROW)],
                    headers={"triton-grpc-protocol-infer-key": "wrong"},
                )
            headers = {"triton-grpc-protocol-infer-key": "letmein"}
            result = client.infer("identity", [_tensor(ROW)], headers=headers)
            np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), ROW)
            assert client.get_model_config("identity", headers=headers).config.name
            with pytest.raises(InferenceServerException):
                client.get_model_config("identity")
            with pytest.raises(InferenceServerException) as info:
                client.is_server_live()
            assert "triton-grpc-protocol-h" in info.value.message()
            assert client.is_server_live(headers={"triton-grpc-protocol-h": "1"})

            errors = []
            client.start_stream(callback=lambda result, error: errors.append(error))
            time.sleep(0.2)  # the server ends the stream as soon as it opens
            with contextlib.suppress(InferenceServerException):
                client.async_stream_infer("identity", [_tensor(ROW)])
            client.stop_stream()
            assert errors and errors[0].status() == "StatusCode.UNAVAILABLE"
            results = []
            client.start_stream(
                callback=lambda result, error: results.append((result, error)), headers=headers
            )
            client.async_stream_infer("identity", [_tensor(ROW)])
            client.stop_stream()
            assert results[0][1] is None


def test_header_forwarding(small_repo):
    with (
        _only(small_repo, "echo", grpc_header_forward_pattern="^x-fwd-") as server,
        grpcclient.InferenceServerClient(frontend_url(server, "grpc")) as client,
    ):
        tensor = grpcclient.InferInput("IN", [1], "INT32")
        tensor.set_data_from_numpy(np.array([1], dtype=np.int32))
        result = client.infer("echo", [tensor], headers={"x-fwd-user": "alice", "x-other": "no"})
        seen = json.loads(result.as_numpy("OUT")[0])
        assert seen["parameters"] == {"x-fwd-user": "alice"}
        got = []
        client.start_stream(
            callback=lambda result, error: got.append(result),
            headers={"x-fwd-user": "bob"},
        )
        client.async_stream_infer("echo", [tensor])
        client.stop_stream()
        assert json.loads(got[0].as_numpy("OUT")[0])["parameters"] == {"x-fwd-user": "bob"}


def test_client_shared_memory_is_off_by_default(small_repo):
    with (
        _only(small_repo, "identity") as server,
        grpcclient.InferenceServerClient(frontend_url(server, "grpc")) as client,
    ):
        with pytest.raises(InferenceServerException) as info:
            client.register_system_shared_memory("r", "/nereid_grpc_none", 64)
        assert info.value.status() == "StatusCode.UNAVAILABLE"
        assert "--allow-client-shm=true" in info.value.message()
        tensor = grpcclient.InferInput("INPUT0", [1, 16], "FP32")
        tensor.set_shared_memory("r", 64)
        with pytest.raises(InferenceServerException) as info:
            client.infer("identity", [tensor])
        assert "Client shared memory is disabled" in info.value.message()
        assert not client.get_system_shared_memory_status().regions


def test_compression(small_repo, tmp_path):
    with _only(small_repo, "identity", grpc_infer_response_compression_level="high") as server:
        url = frontend_url(server, "grpc")
        with grpcclient.InferenceServerClient(url) as client:
            for algorithm in (None, "gzip", "deflate"):
                result = client.infer("identity", [_tensor(ROW)], compression_algorithm=algorithm)
                np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), ROW)
        if shutil.which("nghttp") is None:
            return
        # tritonclient hides the response's grpc-encoding; nghttp shows it.
        from nereid_grpc.protos import grpc_service_pb2 as pb

        request = pb.ModelInferRequest(model_name="identity")
        request.inputs.add(name="INPUT0", datatype="FP32", shape=[1, 16])
        request.raw_input_contents.append(ROW.tobytes())
        body = request.SerializeToString()
        frame = tmp_path / "frame.bin"
        frame.write_bytes(b"\x00" + struct.pack(">I", len(body)) + body)
        out = subprocess.run(
            [
                "nghttp",
                "-v",
                "-d",
                str(frame),
                "-H",
                "content-type: application/grpc",
                "-H",
                "te: trailers",
                "-H",
                "grpc-accept-encoding: identity,deflate,gzip",
                f"http://{url}/inference.GRPCInferenceService/ModelInfer",
            ],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=20,
        ).stdout
        assert "grpc-encoding: deflate" in out
        assert "grpc-status: 0" in out


def _certificates(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def make(name, issuer_key=None, issuer_name=None, ca=False, server=False):
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer_name or subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if server:
            import ipaddress

            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    ]
                ),
                critical=False,
            )
        cert = builder.sign(issuer_key or key, hashes.SHA256())
        return key, cert, subject

    ca_key, ca_cert, ca_name = make("nereid-test-ca", ca=True)
    paths = {}
    for label, (key, cert) in {
        "ca": (ca_key, ca_cert),
        "server": make("localhost", ca_key, ca_name, server=True)[:2],
        "client": make("client", ca_key, ca_name)[:2],
    }.items():
        key_path, cert_path = tmp_path / f"{label}.key", tmp_path / f"{label}.crt"
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        paths[label] = (str(key_path), str(cert_path))
    return paths


def test_tls_and_mutual_tls(small_repo, tmp_path):
    paths = _certificates(tmp_path)
    server_key, server_cert = paths["server"]
    ca_cert = paths["ca"][1]
    with _only(
        small_repo,
        "identity",
        grpc_use_ssl=True,
        grpc_server_cert=server_cert,
        grpc_server_key=server_key,
        grpc_address="127.0.0.1",
    ) as server:
        url = f"localhost:{server.server.frontends['grpc'].port}"
        with grpcclient.InferenceServerClient(url, ssl=True, root_certificates=ca_cert) as client:
            assert client.is_server_live()
            result = client.infer("identity", [_tensor(ROW)])
            np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), ROW)
        with (
            grpcclient.InferenceServerClient(url) as plain,
            pytest.raises(InferenceServerException),
        ):
            plain.is_server_live(client_timeout=2)

    client_key, client_cert = paths["client"]
    with _only(
        small_repo,
        "identity",
        grpc_use_ssl_mutual=True,
        grpc_server_cert=server_cert,
        grpc_server_key=server_key,
        grpc_root_cert=ca_cert,
    ) as server:
        url = f"localhost:{server.server.frontends['grpc'].port}"
        with grpcclient.InferenceServerClient(
            url,
            ssl=True,
            root_certificates=ca_cert,
            private_key=client_key,
            certificate_chain=client_cert,
        ) as client:
            result = client.infer("identity", [_tensor(ROW)])
            np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), ROW)
        with (
            grpcclient.InferenceServerClient(url, ssl=True, root_certificates=ca_cert) as anonymous,
            pytest.raises(InferenceServerException),
        ):
            anonymous.is_server_live(client_timeout=2)


def test_keepalive_options_reach_the_server(small_repo):
    with _only(
        small_repo,
        "identity",
        grpc_keepalive_time=1000,
        grpc_keepalive_timeout=500,
        grpc_keepalive_permit_without_calls=True,
        grpc_http2_max_pings_without_data=0,
    ) as server:
        frontend = server.server.frontends["grpc"]
        options = dict(frontend.settings.channel_options)
        assert options["grpc.keepalive_time_ms"] == 1000
        assert options["grpc.keepalive_permit_without_calls"] == 1
        with grpc.insecure_channel(
            frontend_url(server, "grpc"), options=[("grpc.keepalive_time_ms", 1000)]
        ) as channel:
            grpc.channel_ready_future(channel).result(timeout=5)
