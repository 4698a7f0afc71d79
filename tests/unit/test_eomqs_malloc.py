"""``eomqs.malloc_mmap_threshold_kib``: EO-MQS fixes glibc's mmap threshold before it serves.

Each case runs in a fresh interpreter, because the threshold is process-wide. glibc's
``mallinfo2().hblks`` (blocks held in their own mapping) shows where an allocation went: after
a 4 MiB block is freed, glibc's own threshold has risen to 4 MiB, so a 1 MiB block comes from
the heap; with the threshold fixed it gets its own mapping. The control (setting 0) must show
the heap case, or the probe proves nothing.
"""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc", reason="the setting acts on glibc's malloc only"
)

PROBE = textwrap.dedent(
    """
    import ctypes, sys
    import uvicorn
    from cscale_extensions import config
    from cscale_extensions.services.eomqs import service

    class MallInfo2(ctypes.Structure):
        _fields_ = [(f, ctypes.c_size_t) for f in
                    "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
                    .split()]

    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = MallInfo2
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]

    def probe(app, **kw):  # stands in for uvicorn.run: what serving would allocate
        libc.free(libc.malloc(4 << 20))  # raises glibc's own threshold to 4 MiB
        before = libc.mallinfo2().hblks
        block = libc.malloc(1 << 20)
        print("mapped" if libc.mallinfo2().hblks > before else "heap")
        libc.free(block)

    uvicorn.run = probe
    cfg = config.load(None)
    cfg["federation"]["embedded_sites"] = False
    cfg["eomqs"]["token_secret"] = "test"
    cfg["eomqs"]["malloc_mmap_threshold_kib"] = int(sys.argv[1])
    service.run(cfg)
    """
)


def _where_a_1mib_block_goes(kib: int, tmp_path) -> str:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(kib)],
        capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "CSCALE_HUB_CONFIG": "", "HOME": str(tmp_path)},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1]


def test_the_setting_gives_large_blocks_their_own_mapping(tmp_path):
    assert _where_a_1mib_block_goes(128, tmp_path) == "mapped"


def test_control_glibc_own_threshold_puts_them_on_the_heap(tmp_path):
    assert _where_a_1mib_block_goes(0, tmp_path) == "heap"
