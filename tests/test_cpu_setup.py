"""`keep_freed_memory`: a freed large tensor's memory is reused by the next one instead of faulted in again."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# Allocates and fills a 64 MiB tensor 16 times; prints the page faults of the last four. The first few may
# fault while the heap grows: each request is a little larger than a freed 64 MiB chunk (it is aligned), so
# reuse starts once two freed chunks have merged.
_PROBE = """
import json, resource
import torch
from vlalign.commands.models import keep_freed_memory
kept = keep_freed_memory()
for i in range(16):
    if i == 12:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.ones(16 << 20)
    del x
print(json.dumps({"kept": kept, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def _faults(malloc: str) -> dict:
    env = {**os.environ, "VLALIGN_MALLOC": malloc, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_tensors_are_reused_not_faulted_in_again():
    system, kept = _faults("system"), _faults("")
    assert not system["kept"] and kept["kept"]
    pages = 4 * (64 << 20) // 4096
    assert system["faults"] > 0.9 * pages  # glibc's default: a fresh mmap per 64 MiB tensor
    assert kept["faults"] < 0.05 * pages  # kept: the same heap memory every time
