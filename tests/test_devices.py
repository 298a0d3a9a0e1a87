"""Device choice: never a silent fall back to the CPU."""

import logging

import pytest

from birdkeras.train import distribute


def test_asking_for_a_tpu_without_one_names_what_to_do(monkeypatch):
    monkeypatch.setattr(distribute, "accelerator_files", lambda: {"tpu": [], "gpu": []})
    with pytest.raises(distribute.DeviceError, match="TPU .*none found.*JAX"):
        distribute.select("tpu")


def test_auto_with_tpu_device_files_it_cannot_use_stops(monkeypatch):
    monkeypatch.setattr(distribute, "accelerator_files",
                        lambda: {"tpu": ["/dev/accel0", "/dev/accel1"], "gpu": []})
    with pytest.raises(distribute.DeviceError, match="found /dev/accel0, /dev/accel1"):
        distribute.select("auto")


def test_auto_with_gpu_device_files_it_cannot_use_stops(monkeypatch):
    monkeypatch.setattr(distribute, "accelerator_files",
                        lambda: {"tpu": [], "gpu": ["/dev/nvidia0"]})
    monkeypatch.delenv("TPU_NAME", raising=False)
    with pytest.raises(distribute.DeviceError, match="GPU .*found /dev/nvidia0.*CUDA"):
        distribute.select("auto")


def test_auto_without_accelerators_says_it_uses_the_cpu(monkeypatch, caplog):
    monkeypatch.setattr(distribute, "accelerator_files", lambda: {"tpu": [], "gpu": []})
    monkeypatch.delenv("TPU_NAME", raising=False)
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with caplog.at_level(logging.INFO, logger="birdkeras"):
        placement = distribute.select("auto")
    assert placement.replicas == 1 and placement.platform == "cpu"
    assert "training on the CPU" in caplog.text
