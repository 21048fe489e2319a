"""Model FLOPs utilization: MFU = tokens/s × flops_per_token / (peak FLOP/s × GPUs).

flops_per_token = 6·N + 12·L·d·T (see `mupctl.architecture.flops_per_token`), the same formula as
the throughput anchor. Peak = the GPU model's dense bf16 tensor-core peak from the table below
(spec sheets). An unknown GPU or a CPU gives `None` rather than a guess.
"""

from __future__ import annotations

PEAK_BF16_FLOPS = {
    "H100": 989e12,   # SXM/HBM3; the PCIe card is lower (756e12)
    "H200": 989e12,
    "GH200": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "B200": 2250e12,
}


def peak_flops(device_name: str | None) -> float | None:
    """Dense bf16 peak for a CUDA device name such as 'NVIDIA H100 80GB HBM3', else None."""
    if not device_name:
        return None
    if "H100" in device_name and "PCIe" in device_name:
        return 756e12
    for key in sorted(PEAK_BF16_FLOPS, key=len, reverse=True):
        if key in device_name:
            return PEAK_BF16_FLOPS[key]
    return None


def mfu(tokens_per_s: float, flops_per_token: int, device_name: str | None, n_gpus: int) -> float | None:
    peak = peak_flops(device_name)
    return None if peak is None else tokens_per_s * flops_per_token / (peak * n_gpus)
