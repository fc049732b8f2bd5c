"""bertkit.process_memory: what the benchmark's memory children read, on the allocators bertkit uses."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from bertkit.allocator import find_allocator
from bertkit.process_memory import memory_now, memory_peak, reset_peak

# Hold 1,000 blocks of 1 MB, free them, then reset the peak as a benchmark child does before its
# measured step: what the allocator kept mapped must be given back, or the step's own memory
# would hide in RSS that was already there.
CHILD = """
import json, torch
from bertkit.process_memory import memory_now, reset_peak
cpu = torch.device("cpu")
blocks = [torch.ones(2**18) for _ in range(1000)]
held = memory_now(cpu)
del blocks
reset_peak(cpu)
print(json.dumps({"held": held, "after_reset": memory_now(cpu)}))
"""


def run_child(preload: str | None) -> dict[str, float]:
    env = {**os.environ, "BERTKIT_ALLOCATOR": "system"}
    env.pop("LD_PRELOAD", None)
    if preload:
        env["LD_PRELOAD"] = preload
    done = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
@pytest.mark.parametrize("allocator", ["glibc", "tcmalloc"])
def test_reset_peak_gives_freed_heap_back(allocator):
    preload = None
    if allocator == "tcmalloc":
        preload = find_allocator()
        if preload is None or "tcmalloc" not in preload:
            pytest.skip("tcmalloc is not installed (setup.sh installs libtcmalloc-minimal4 as root)")
    sizes = run_child(preload)
    assert sizes["held"] - sizes["after_reset"] > 800, sizes  # ~1,000 MB held, then given back


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_peak_counts_from_the_reset():
    cpu = torch.device("cpu")
    reset_peak(cpu)
    start = memory_now(cpu)
    block = torch.ones(2**26)  # 256 MB, touched
    assert memory_peak(cpu) - start > 200
    del block
