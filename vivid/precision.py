"""Which floating-point type the networks run in: `auto` picks the fastest one the hardware
computes natively (bf16 on CPUs with AVX-512 BF16 / AMX / Arm BF16, fp32 on other CPUs; bf16
on GPUs that support it, fp16 on other GPUs), or the user names one.

One SD1.5-sized UNet call on 8 frames at 16x16 latents takes 3.3 s in fp32 and 1.2 s in bf16
on a 2-core AVX-512 BF16 CPU; on a CPU without native bf16 the same call in bf16 is emulated
and slower than fp32, hence fp32 there. `bench/diffusion_engine.py` measures both.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

#: The names users give (`--dtype`), and what they mean.
DTYPES: dict[str, torch.dtype | None] = {
    "auto": None,
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}
#: Short names of torch dtypes, for messages.
NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


class DtypeError(ValueError):
    """A dtype name or value the engine cannot run in."""


@dataclass(frozen=True)
class Precision:
    """The dtype the networks run in and why it was chosen (shown to the user)."""

    dtype: torch.dtype
    reason: str

    @property
    def name(self) -> str:
        return NAMES[self.dtype]

    def __str__(self) -> str:
        return f"{self.name} ({self.reason})"


def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bf16 in hardware (x86: AVX-512 BF16 or AMX-BF16; Arm: BF16)."""
    capabilities = getattr(torch.cpu, "get_capabilities", None)
    if capabilities is None:  # torch < 2.8: no way to ask; fp32 is the safe choice
        return False
    caps = capabilities()
    return any(bool(caps.get(flag)) for flag in ("avx512_bf16", "amx_bf16", "bf16", "sve_bf16"))


def parse_dtype(value: str | torch.dtype | None) -> torch.dtype | None:
    """`value` as a torch dtype, None for "auto" (or None); a DtypeError quotes anything else."""
    if value is None or isinstance(value, torch.dtype):
        if value is not None and value not in NAMES:
            raise DtypeError(f"dtype must be one of {', '.join(NAMES.values())}, got {value}")
        return value
    key = str(value).lower().replace("float32", "fp32").replace("bfloat16", "bf16").replace("float16", "fp16")
    if key not in DTYPES:
        raise DtypeError(f"dtype must be one of {', '.join(DTYPES)}, got {value!r}")
    return DTYPES[key]


def choose_precision(requested: str | torch.dtype | None = "auto", device: str | torch.device = "cpu") -> Precision:
    """The dtype to run in on `device`: the requested one, or the `auto` choice (module docstring)."""
    device = torch.device(device)
    dtype = parse_dtype(requested)
    if dtype is not None:
        precision = Precision(dtype, "asked for")
        if device.type == "cpu" and dtype == torch.bfloat16 and not cpu_has_native_bf16():
            log.warning("bf16 on a CPU without native bf16 is emulated and usually slower than fp32")
        elif device.type == "cpu" and dtype == torch.float16:
            log.warning("fp16 on a CPU is slow (few fp16 kernels); bf16 or fp32 are faster")
        return precision
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return Precision(torch.bfloat16, "auto: this GPU supports bf16")
        return Precision(torch.float16, "auto: GPU without bf16")
    if device.type == "cpu":
        if cpu_has_native_bf16():
            return Precision(torch.bfloat16, "auto: this CPU computes bf16 natively")
        return Precision(torch.float32, "auto: this CPU has no native bf16")
    return Precision(torch.float32, f"auto: {device.type} device")
