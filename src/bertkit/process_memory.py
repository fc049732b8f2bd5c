"""How much memory this process uses, on CPU or CUDA: what the benchmark's memory children report.

On CUDA, the caching allocator's own statistics. On CPU, the resident set from /proc/self/status
(Linux) and its high-water mark, which writing "5" to /proc/self/clear_refs resets; elsewhere the
peak falls back to ``ru_maxrss``, the process's whole life. Sizes are MB (2^20 bytes).
"""

from __future__ import annotations

import ctypes
import re
import resource
import sys
from pathlib import Path

import torch


def reset_peak(device: torch.device) -> None:
    """Start a new peak from what is in use now: CUDA's allocator statistics, or on CPU the
    kernel's RSS high-water mark (Linux), once freed heap is given back."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return
    _release_free_heap()
    try:  # Linux: "5" resets VmHWM, the RSS high-water mark, to the current RSS
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # then the peak is the process's since it started, loading included


def _release_free_heap() -> None:
    """Give freed heap memory back to the kernel, so that a step's own allocations show in RSS:
    tcmalloc (which bertkit preloads, bertkit.allocator) and glibc both keep it mapped otherwise."""
    try:
        process = ctypes.CDLL(None)
    except (OSError, TypeError):
        return  # no C library to ask (not a POSIX system)
    for release, args in (("MallocExtension_ReleaseFreeMemory", ()), ("malloc_trim", (0,))):
        try:
            getattr(process, release)(*args)
        except AttributeError:
            pass  # not this allocator (jemalloc keeps what it holds: the step figure may miss that)


def memory_now(device: torch.device) -> float | None:
    """MB in use now: CUDA's allocated memory, or this process's resident set (None without /proc)."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device) / 2**20
    return _proc_status_mb("VmRSS")


def memory_peak(device: torch.device) -> float:
    """MB at the peak since the last reset_peak (on CPU without /proc: since the process started)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = _proc_status_mb("VmHWM")
    if peak is None:  # no /proc: ru_maxrss is kB on Linux, bytes on macOS
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)
    return peak


def _proc_status_mb(field: str) -> float | None:
    try:
        found = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    except OSError:
        return None
    return int(found.group(1)) / 1024 if found else None
