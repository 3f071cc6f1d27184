"""Which CPU buffer types llama.cpp may repack weights into, chosen from the host's CPU flags.

llama.cpp repacks weights into "extra" CPU buffer types (AMX tiles, CPU_REPACK layouts) when
``llama_model_params.use_extra_bufts`` is on, its default. On CPUs with AMX the AMX buffer's matrix
multiply crashes the process at the first decode (llama.cpp issue 20824, closed without a fix), so
the engine turns extra buffers off where those flags are present, unless a deployment forces them.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

from aigrid.config import ExtraBuffers

# Flags whose buffer type is known to crash llama.cpp: the AMX tile unit and its int8 kernels,
# which take the quantized weights of Q4_0, Q4_1 and Q8_0 models.
FAULTY_FLAGS = ("amx_tile", "amx_int8")
_CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True, slots=True)
class BufferChoice:
    """Whether weights may go into extra CPU buffer types, and why, for the load log."""

    enabled: bool
    reason: str

    @property
    def label(self) -> str:
        """``on`` or ``off``."""
        return "on" if self.enabled else "off"


def parse_cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The feature flags of a ``/proc/cpuinfo`` text (x86's ``flags`` or Arm's ``Features`` lines)."""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return frozenset(flags)


def host_cpu_flags() -> frozenset[str] | None:
    """This machine's CPU flags, or None where ``/proc/cpuinfo`` cannot be read."""
    try:
        return parse_cpu_flags(_CPUINFO.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return None


def choose_extra_buffers(
    setting: ExtraBuffers, flags: frozenset[str] | None, machine: str | None = None
) -> BufferChoice:
    """The one decision every model load follows: the setting if forced, else by the CPU's flags.

    Where the flags cannot be read on an x86-64 machine, AMX cannot be ruled out, so ``auto``
    turns extra buffers off: slower at worst, never a crash.
    """
    if setting == "on":
        return BufferChoice(True, "forced on by cpu_extra_buffers")
    if setting == "off":
        return BufferChoice(False, "forced off by cpu_extra_buffers")
    if flags is None:
        arch = (machine if machine is not None else platform.machine()).lower()
        if arch in ("x86_64", "amd64", "x64", "i386", "i686"):
            return BufferChoice(False, "auto: the CPU's flags could not be read, so AMX cannot be ruled out")
        return BufferChoice(True, f"auto: no AMX on {arch or 'this architecture'}")
    faulty = [f for f in FAULTY_FLAGS if f in flags]
    if faulty:
        return BufferChoice(False, f"auto: the CPU has {', '.join(faulty)} (llama.cpp's AMX buffers crash)")
    return BufferChoice(True, "auto: the CPU has no AMX")


def host_choice(setting: ExtraBuffers) -> BufferChoice:
    """``choose_extra_buffers`` for this machine."""
    return choose_extra_buffers(setting, host_cpu_flags())
