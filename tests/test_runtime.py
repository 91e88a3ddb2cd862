"""longdoc.runtime.tune_cpu_allocator: glibc reuses freed blocks instead of unmapping them.

Reference: the kernel's own count of minor page faults (getrusage) during LSH attention training steps at N = 16K,
in fresh processes because the setting is process-wide: measured 89k-109k faults per step with glibc's defaults
(its blocks above the mmap threshold are unmapped on free and faulted in again) and 2k-8k when the heap keeps
them (at N = 32K: 321k vs 1.6k).
"""

import subprocess
import sys
import textwrap

import pytest

from longdoc.config import ConfigError
from longdoc.train import validate_config
from longdoc.runtime import tune_cpu_allocator

PROBE = textwrap.dedent("""
    import resource, sys, torch
    from longdoc.attention import LSHAttention
    from longdoc.runtime import tune_cpu_allocator
    ok = tune_cpu_allocator() if sys.argv[1] == "tuned" else None
    torch.set_num_threads(1)
    torch.manual_seed(0)
    layer = LSHAttention(256, 4, n_hashes=2, bucket_size=64)
    x, g = torch.randn(1, 16384, 256, requires_grad=True), torch.randn(1, 16384, 256)
    def faults():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(2):  # first steps: the pages are new either way
        layer(x).backward(g)
    f0 = faults()
    for _ in range(3):
        layer(x).backward(g)
    print(ok, (faults() - f0) // 3)
""")



def _probe(mode):
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=120, check=True)
    ok, per_round = out.stdout.split()
    return ok, int(per_round)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_tuned_allocator_reuses_freed_blocks_without_page_faults():
    _, default = _probe("default")
    ok, tuned = _probe("tuned")
    assert ok == "True"
    assert default > 5_000
    assert tuned < default / 3


@pytest.mark.parametrize("bad", [0, -1, 2**31, 1.5, True])
def test_bad_thresholds_are_rejected(bad):
    with pytest.raises(ValueError, match="below 2\\*\\*31"):
        tune_cpu_allocator(mmap_threshold=bad)


def test_unknown_cpu_allocator_fails_at_composition(compose_cfg):
    cfg = compose_cfg("runtime.cpu_allocator=jemalloc")
    with pytest.raises(ConfigError, match="runtime.cpu_allocator='jemalloc' is unknown"):
        validate_config(cfg)
