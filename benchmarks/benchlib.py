"""What the benchmark scripts share: a description of the machine they ran on."""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path


def machine() -> str:
    """CPU model, kernel and CPU count, e.g. ``AMD EPYC; Linux 6.1 x86_64; 2 CPUs``."""
    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    uname = platform.uname()
    return f"{name}; {uname.system} {uname.release} {uname.machine}; {os.cpu_count()} CPUs"
