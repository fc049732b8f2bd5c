"""Choosing the allocator: when the command re-executes itself with tcmalloc/jemalloc preloaded."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bertkit import allocator
from bertkit.allocator import ENV_CHOICE, ENV_DONE, find_allocator, preload_environment
from bertkit.errors import BertkitError


@pytest.fixture
def fake_lib(tmp_path, monkeypatch):
    monkeypatch.setattr(allocator.ctypes.util, "find_library", lambda name: None)
    (tmp_path / "libtcmalloc_minimal.so.4").write_bytes(b"")
    return str(tmp_path)


def test_preloads_the_library_it_finds(fake_lib):
    env = preload_environment({"PATH": "/bin"}, "linux", dirs=[fake_lib])
    assert env["LD_PRELOAD"] == os.path.join(fake_lib, "libtcmalloc_minimal.so.4")
    assert env[ENV_DONE] and env["PATH"] == "/bin"
    env = preload_environment({"LD_PRELOAD": "libother.so"}, "linux", dirs=[fake_lib])
    assert env["LD_PRELOAD"].split() == [os.path.join(fake_lib, "libtcmalloc_minimal.so.4"), "libother.so"]


def test_prefers_tcmalloc_to_jemalloc(fake_lib):
    jemalloc_dir = os.path.join(fake_lib, "je")
    os.mkdir(jemalloc_dir)
    open(os.path.join(jemalloc_dir, "libjemalloc.so.2"), "wb").close()
    assert find_allocator([jemalloc_dir, fake_lib]).endswith("libtcmalloc_minimal.so.4")
    assert find_allocator([jemalloc_dir]).endswith("libjemalloc.so.2")


@pytest.mark.parametrize("environ, platform", [
    ({ENV_CHOICE: "system"}, "linux"),
    ({ENV_DONE: "/x/libtcmalloc_minimal.so.4"}, "linux"),  # already re-executed once: never loop
    ({"LD_PRELOAD": "/opt/libjemalloc.so.2"}, "linux"),  # the user chose one
    ({}, "darwin"),
])
def test_leaves_the_process_alone(fake_lib, environ, platform):
    assert preload_environment(environ, platform, dirs=[fake_lib]) is None


def test_nothing_installed_means_no_reexec(tmp_path, monkeypatch):
    monkeypatch.setattr(allocator.ctypes.util, "find_library", lambda name: None)
    assert preload_environment({}, "linux", dirs=[str(tmp_path)]) is None


def test_a_named_library_that_is_missing_is_a_user_error(tmp_path):
    with pytest.raises(BertkitError, match=f"{ENV_CHOICE}=.*nope.so: no such library file"):
        preload_environment({ENV_CHOICE: str(tmp_path / "nope.so")}, "linux")


def test_the_command_reports_a_missing_named_library(tmp_path):
    env = {**os.environ, ENV_CHOICE: str(tmp_path / "nope.so")}
    env.pop(ENV_DONE, None)
    result = subprocess.run([sys.executable, "-m", "bertkit", "--help"], env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith(f"bertkit: error: {ENV_CHOICE}=") and "Traceback" not in result.stderr


PROBE = "from bertkit.allocator import use_fast_allocator, active_allocator; use_fast_allocator(); print(active_allocator())"


@pytest.mark.skipif(not sys.platform.startswith("linux") or find_allocator() is None,
                    reason="no tcmalloc/jemalloc installed (Debian: apt-get install libtcmalloc-minimal4)")
@pytest.mark.parametrize("choice, expected", [("", ("tcmalloc", "jemalloc")), ("system", ("system",))])
def test_a_process_reexecutes_onto_the_installed_allocator(choice, expected):
    env = {k: v for k, v in os.environ.items() if k not in (ENV_DONE, "LD_PRELOAD")}
    env[ENV_CHOICE] = choice
    result = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() in expected
