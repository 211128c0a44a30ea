"""The default trainer's precision: bf16 autocast where the hardware computes bf16 natively, fp32 elsewhere.

`conf/trainer/auto.yaml` sets `precision: ${auto_precision:${.accelerator}}`; the resolver calls `auto_precision`.
bf16 autocast keeps fp32 master weights (Lightning's `bf16-mixed`), so only the matrix products run in bf16.
"""

from __future__ import annotations

import platform
from pathlib import Path

import torch

BF16, FP32 = "bf16-mixed", "32-true"


def _cpuinfo_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_bf16_feature() -> str | None:
    """The CPU feature that makes bf16 autocast fast here ("AMX" or "AVX512-BF16"), or None.

    Asks PyTorch's own CPU probe (the cpuinfo library, every OS), and /proc/cpuinfo where that probe is missing.
    """
    probes = (("AMX", "_is_amx_tile_supported", "amx_bf16"), ("AVX512-BF16", "_is_avx512_bf16_supported", "avx512_bf16"))
    flags: set[str] | None = None
    for name, probe, flag in probes:
        check = getattr(torch.cpu, probe, None)
        if check is not None:
            if check():
                return name
            continue
        if flags is None:
            flags = _cpuinfo_flags()
        if flag in flags:
            return name
    return None


def gpu_supports_bf16() -> bool:
    """A CUDA GPU that computes bf16 natively (Ampere or newer), not by emulation."""
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)


def _device(accelerator: str) -> str:
    accelerator = str(accelerator).lower()
    if accelerator == "auto":  # what Lightning's `accelerator=auto` picks for CUDA vs CPU
        return "gpu" if torch.cuda.is_available() else "cpu"
    return "gpu" if accelerator in ("gpu", "cuda") else accelerator


def auto_precision(accelerator: str = "cpu") -> str:
    """`bf16-mixed` on a bf16-capable GPU or a CPU with AMX/AVX512-BF16, else `32-true`."""
    device = _device(accelerator)
    if device == "gpu":
        return BF16 if gpu_supports_bf16() else FP32
    if device == "cpu":
        return BF16 if cpu_bf16_feature() else FP32
    return FP32  # mps, tpu, ...: leave fp32 to Lightning


def explain(accelerator: str, precision: str, automatic: bool) -> str:
    """One phrase for the run header: what runs in which precision, and why."""
    device = _device(accelerator)
    what = "bf16 autocast, fp32 weights" if precision == BF16 else ("fp32" if precision == FP32 else precision)
    if not automatic:
        return f"{precision} ({what}; set by the trainer config)"
    if device == "cpu":
        feature = cpu_bf16_feature()
        why = f"this CPU has {feature}" if feature else (
            f"this CPU ({platform.machine()}) has neither AMX nor AVX512-BF16"
        )
    elif device == "gpu":
        why = "this GPU computes bf16" if precision == BF16 else "this GPU has no native bf16"
    else:
        why = f"accelerator {device}"
    return f"{precision} ({what}; chosen automatically: {why})"
