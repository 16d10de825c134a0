"""Free memory on a device, for the checks that refuse a state too large to hold before a
run starts (a profile's state, correlation sums). Imports torch only for a CUDA device."""

from __future__ import annotations

import os


def available_memory(device=None) -> int | None:
    """Bytes free for new allocations on ``device`` (a ``torch.device`` or a name; None or
    the CPU: ``MemAvailable`` of ``/proc/meminfo``, else the free physical pages), or None
    where that cannot be read."""
    kind = getattr(device, "type", None) or str(device or "cpu").split(":")[0]
    if kind == "cuda":
        import torch

        return int(torch.cuda.mem_get_info(device)[0])
    if kind != "cpu":
        return None  # another accelerator: no portable way to ask
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None
