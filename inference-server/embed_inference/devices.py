"""Device and dtype names: parsing, availability, the `auto` rules.

Shared by the start-up configuration and LoadModel, so that a flag and a
request are held to the same rules. torch is imported only when a CUDA
question must be answered, so the debug engine never loads it.
"""

from __future__ import annotations

import re

from .errors import InvalidArgument

DTYPES = ("float32", "float16", "bfloat16")
_DEVICE_RE = re.compile(r"^(cpu|cuda)(?::(\d+))?$")


def parse_device(name: str) -> str:
    """Checks the syntax and spells the device one way ("cuda" -> "cuda:0"), so that
    cache keys and model keys do not depend on how a client wrote it."""
    match = _DEVICE_RE.match(name.strip())
    if match is None or (match.group(1) == "cpu" and match.group(2) is not None):
        raise InvalidArgument(f"bad device {name!r}: expected cpu, cuda or cuda:N")
    if match.group(1) == "cpu":
        return "cpu"
    return f"cuda:{int(match.group(2) or 0)}"


def cuda_device_count() -> int:
    import torch  # deferred: only the sentence-transformers engine asks

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check_available(device: str) -> None:
    """Refuses a CUDA device that this machine does not have."""
    if device == "cpu":
        return
    index = int(device.split(":")[1])
    count = cuda_device_count()
    if index >= count:
        have = f"{count} CUDA device(s)" if count else "no CUDA device"
        raise InvalidArgument(f"device {device} is not available: this machine has {have}")


def default_device() -> str:
    return "cuda:0" if cuda_device_count() > 0 else "cpu"


def resolve_dtype(dtype: str, device: str) -> str:
    """`auto` (or empty) means float16 on CUDA and float32 on CPU; half precision is
    refused on CPU rather than silently computed in float32, because dtype is one of
    the settings that change the numbers the orchestrator records."""
    name = dtype.strip().lower() or "auto"
    if name == "auto":
        return "float16" if device.startswith("cuda") else "float32"
    if name not in DTYPES:
        raise InvalidArgument(f"bad dtype {dtype!r}: expected auto, {', '.join(DTYPES)}")
    if name == "float32" or device.startswith("cuda"):
        return name
    if name == "bfloat16" and cpu_has_bfloat16():
        return name
    if name == "bfloat16":
        raise InvalidArgument(
            "dtype bfloat16 on the CPU needs AVX-512 BF16 or AMX, which this CPU lacks; use float32"
        )
    raise InvalidArgument(f"dtype {name} needs a CUDA device; {device} computes float32 only")


def cpu_has_bfloat16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether the CPU computes bfloat16 natively (AVX-512 BF16 or AMX), where torch and
    OpenVINO are fast in it; elsewhere it is emulated, slower than float32."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as handle:
            flags = next((line for line in handle if line.startswith("flags")), "")
    except OSError:
        return False
    return bool({"avx512_bf16", "amx_bf16"} & set(flags.split()))
