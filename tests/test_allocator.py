import json
import os
import platform
import subprocess
import sys

import pytest

# A child process allocates, fills and frees a 64 MB tensor, 8 times to settle and 4 times counting the page
# faults: with glibc's defaults each round maps fresh memory (about 16,000 faults of 4 KB pages); with
# keep_freed_memory the rounds reuse freed blocks (glibc takes a few rounds to hold enough of them, the
# aligned requests being a little larger than the blocks freed), until release_freed_memory gives them back.
CHILD = r"""
import json, resource, sys, torch
from hnas.allocator import keep_freed_memory, release_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else False
def round_trip():
    t = torch.empty(16 * 2**20)
    t.fill_(1.0)
    del t
for _ in range(8):
    round_trip()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    round_trip()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
def resident_mb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))
held = resident_mb()
small = release_freed_memory(keep_bytes=2**40)
released = release_freed_memory(keep_bytes=0)
print(json.dumps({"kept": kept, "faults": faults, "small": small, "released": released,
                  "freed_mb": held - resident_mb()}))
"""

glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="a glibc malloc setting")


def run_child(mode, **env):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")} | env
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


@glibc_only
def test_kept_freed_memory_is_reused_instead_of_mapped_again():
    default, kept = run_child("default"), run_child("keep")
    pages = 4 * 64 * 2**20 // 4096
    assert kept["kept"] is True
    assert default["faults"] > pages // 2  # the test measures what it should: the default maps anew
    assert kept["faults"] < pages // 20
    assert not kept["small"]  # under keep_bytes free: kept for the next architecture
    assert kept["released"] and kept["freed_mb"] > 128


@glibc_only
def test_the_users_own_malloc_settings_are_left_alone():
    result = run_child("keep", MALLOC_TRIM_THRESHOLD_="131072")
    assert result["kept"] is False
