"""The benchmark's own plumbing: it finds its peers without environment variables a newcomer
would have to know, and says which peers ran."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
import peers  # noqa: E402
from machine import cpu_line  # noqa: E402


def test_mkl_is_found_in_the_environments_lib(tmp_path, monkeypatch):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "libmkl_rt.so.3").write_bytes(b"")
    monkeypatch.delenv("MKL_RT", raising=False)
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    assert peers.find_mkl() == str(tmp_path / "lib" / "libmkl_rt.so.3")
    assert os.environ["MKL_RT"] == str(tmp_path / "lib" / "libmkl_rt.so.3")
    monkeypatch.setenv("MKL_RT", "/somewhere/else/libmkl_rt.so")  # a user's choice is kept
    assert peers.find_mkl() == "/somewhere/else/libmkl_rt.so"


def test_availability_names_every_peer_and_why_one_is_missing(monkeypatch):
    def gone(w, x):
        raise peers.Unavailable("not installed here")
    monkeypatch.setitem(peers.PEERS, "gone", gone)
    got = peers.availability()
    assert set(got) == set(peers.PEERS)
    assert got["numpy-dense"] == "ok" and got["gone"] == "missing: not installed here"


def test_cpu_line_names_model_and_flags():
    line = cpu_line()
    assert "logical CPUs" in line and "flags:" in line
