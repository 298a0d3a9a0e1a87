"""OpenVINO, an optional dependency (`pip install 'birdkeras[openvino]'`): the package,
and the CPU settings every compiled model gets."""

from __future__ import annotations

from birdkeras.export.card import ExportError

# Precisions a runtime may be asked for; f32 is the default everywhere.
PRECISIONS = ("f32", "bf16", "f16")


def openvino_module():
    """The openvino package, or a clear error saying how to install it."""
    try:
        import openvino  # noqa: PLC0415 - optional dependency (birdkeras[openvino])
    except ImportError as err:
        raise ExportError("OpenVINO is an optional dependency: pip install 'birdkeras[openvino]' "
                          "(or pip install openvino)") from err
    return openvino


def openvino_config(threads: int = 0, precision: str = "f32") -> dict:
    """OpenVINO CPU settings: latency mode, threads not pinned to cores (decode threads
    share them), and the inference precision set explicitly (OpenVINO's default is
    bfloat16 on CPUs with avx512_bf16 or AMX)."""
    config = {"PERFORMANCE_HINT": "LATENCY", "ENABLE_CPU_PINNING": False,
              "INFERENCE_PRECISION_HINT": precision}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    return config


def openvino_precision(element_type) -> str:
    """The short name ("f32", "bf16", "f16") of a compiled model's
    INFERENCE_PRECISION_HINT (an `openvino.Type`, printed "<Type: 'bfloat16'>")."""
    name = str(element_type).lower()
    for short, long in (("bf16", "bfloat16"), ("f16", "float16"), ("f32", "float32")):
        if long in name or short in name:
            return short
    return name
