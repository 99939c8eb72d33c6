"""The test harness itself: the ../shared guard, reserved ports, and CI's required skips."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import ROOT, SHARED, reserved_port, shared_reads

# ---------------------------------------------------------------------------------------------
# No test reads ../shared


def test_an_open_under_shared_is_recorded_and_others_are_not(tmp_path, monkeypatch):
    own = tmp_path / "data.txt"
    own.write_text("mine")
    assert own.read_text() == "mine"
    assert shared_reads == []
    monkeypatch.chdir(ROOT)
    absent = "cmhl-no-such-file-for-the-harness-test"
    for path in (SHARED / "data" / absent, Path("..") / "shared" / absent):
        with pytest.raises(OSError):
            path.open()  # the audit event comes before the OS looks
    recorded, shared_reads[:] = list(shared_reads), []  # (else this test fails at teardown)
    assert recorded == [str(SHARED / "data" / absent), os.path.join("..", "shared", absent)]


# ---------------------------------------------------------------------------------------------
# Reserved ports


def test_a_reserved_port_is_kept_from_others_and_open_to_its_server():
    with reserved_port() as port:
        with socket.socket() as other, pytest.raises(OSError) as info:
            other.bind(("127.0.0.1", port))  # anyone else: taken
        assert info.value.errno == errno.EADDRINUSE
        with socket.socket() as server:  # the child's server (SO_REUSEADDR, as gRPC)
            server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            server.bind(("127.0.0.1", port))
            server.listen()
            with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
                accepted, _ = server.accept()
                client.sendall(b"x")
                assert accepted.recv(1) == b"x"
            accepted.close()  # after the client: no TIME_WAIT left on the port
    with socket.socket() as other:  # released after the block
        other.bind(("127.0.0.1", port))


@pytest.mark.slow  # a jax process (seconds)
def test_jax_distributed_coordinator_binds_a_reserved_port(tmp_path):
    code = textwrap.dedent(
        """
        import sys
        import jax
        jax.distributed.initialize(
            f"127.0.0.1:{sys.argv[1]}", num_processes=1, process_id=0, initialization_timeout=60
        )
        print("coordinator up", jax.process_count(), flush=True)
        jax.distributed.shutdown()
        """
    )
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    with reserved_port() as port:
        proc = subprocess.run(
            [sys.executable, "-c", code, str(port)],
            capture_output=True,
            text=True,
            env=env,
            timeout=240,
        )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "coordinator up 1" in proc.stdout


# ---------------------------------------------------------------------------------------------
# CMHL_REQUIRE: skips CI must not have


SAMPLE_TESTS = {
    "test_sample.py": """
        import pytest

        def test_runs():
            pass

        def test_needs_torch():
            pytest.skip("could not import 'torch': No module named 'torch'")

        def test_unrelated_skip():
            pytest.skip("cmeel-mimalloc not installed")

        def test_mpnet_real_weights_encode():
            pytest.skip("weights not installed")

        @pytest.mark.xfail(reason="torch is known to differ here")
        def test_expected_failure():
            raise AssertionError
    """,
    "test_module_skip.py": """
        import pytest

        pytest.skip("WordNet not installed", allow_module_level=True)

        def test_never():
            pass
    """,
}


def _run_sample(tmp_path: Path, require: str | None) -> subprocess.CompletedProcess:
    for name, text in SAMPLE_TESTS.items():
        (tmp_path / name).write_text(textwrap.dedent(text))
    env = {k: v for k, v in os.environ.items() if k != "CMHL_REQUIRE"}
    if require is not None:
        env["CMHL_REQUIRE"] = require
    env["PYTHONPATH"] = str(ROOT / "tests")
    cmd = [sys.executable, "-m", "pytest", "-p", "required_skips", "-p", "no:cacheprovider"]
    return subprocess.run(
        [*cmd, "-rfEs", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_without_require_skips_stay_skips(tmp_path):
    proc = _run_sample(tmp_path, None)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "1 passed, 4 skipped, 1 xfailed" in proc.stdout
    assert "SKIPPED [1] test_sample.py:11: cmeel-mimalloc not installed" in proc.stdout  # -rs


def test_a_required_capability_that_skips_fails_the_run(tmp_path):
    proc = _run_sample(tmp_path, "torch, mpnet,wordnet")
    out = proc.stdout
    assert proc.returncode == 1, out[-3000:]
    assert "FAILED test_sample.py::test_needs_torch" in out
    assert "CMHL_REQUIRE includes 'torch', but the test skipped: could not import" in out
    assert "FAILED test_sample.py::test_mpnet_real_weights_encode" in out  # by its name
    assert "cmeel-mimalloc not installed" in out and "1 xfailed" in out  # others unchanged
    assert "test_module_skip.py: CMHL_REQUIRE includes 'wordnet': WordNet not installed" in out
    assert "2 failed, 1 passed, 2 skipped, 1 xfailed" in out


def test_only_the_module_skip_still_fails_the_run(tmp_path):
    proc = _run_sample(tmp_path, "wordnet")
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "1 passed, 4 skipped, 1 xfailed" in proc.stdout
    assert "required capabilities missing (CMHL_REQUIRE)" in proc.stdout


def test_an_unknown_required_name_is_an_error(tmp_path):
    proc = _run_sample(tmp_path, "torch,jemaloc")
    assert proc.returncode == pytest.ExitCode.USAGE_ERROR, proc.stdout + proc.stderr
    assert "unknown ['jemaloc']" in proc.stderr
