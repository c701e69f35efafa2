"""When the decode-path kernels are launched with programmatic dependent launch (`tierlm.kernels.pdl`)."""
from __future__ import annotations

from unittest import mock

import pytest
import torch

from tierlm.kernels.pdl import ENV, _sm_major, launch_options, pdl_enabled


@pytest.fixture(autouse=True)
def _real_capabilities_afterwards():
    yield
    _sm_major.cache_clear()  # a mocked capability must not outlive its test


def test_never_off_cuda(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    assert not pdl_enabled(torch.device("cpu"))


def test_by_capability_and_switch(monkeypatch):
    cuda = torch.device("cuda", 0)
    monkeypatch.delenv(ENV, raising=False)
    _sm_major.cache_clear()  # the capability is asked once per device
    with mock.patch("torch.cuda.get_device_capability", return_value=(9, 0)):
        assert pdl_enabled(cuda)
        monkeypatch.setenv(ENV, "0")
        assert not pdl_enabled(cuda)
        monkeypatch.setenv(ENV, "1")
        assert pdl_enabled(cuda)
    _sm_major.cache_clear()
    with mock.patch("torch.cuda.get_device_capability", return_value=(8, 0)):
        assert not pdl_enabled(cuda)  # Ampere has no griddepcontrol


def test_never_on_rocm(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.setattr(torch.version, "hip", "6.4")
    _sm_major.cache_clear()
    with mock.patch("torch.cuda.get_device_capability", return_value=(9, 4)):  # an MI300 reports 9.4
        assert not pdl_enabled(torch.device("cuda", 0))


def test_launch_keywords():
    assert launch_options(True) == {"launch_pdl": True}
    assert launch_options(False) == {}  # older Triton launchers do not take the keyword at all
