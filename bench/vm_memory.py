"""The guest-memory state of a VM with free page reporting, which decides big-file timings.

A virtio balloon with free page reporting hands the guest's free memory back to the host. The
first write to such memory is slow (measured here: 0.48 GB/s for the first pass over 2 GiB of
fresh anonymous memory, 9.4 GB/s for the second), so a run that fills the page cache with
reported memory takes 3-4 s for 1 GiB where the same run in memory the guest has already used
takes 1.0-1.6 s, for any tool. Which state a run meets is not under the benchmark's control.

`steady()` takes that state out of a benchmark run: it stops the reporting (order 11 is above
the largest block the buddy allocator has, so no block qualifies), touches the free memory once
so that all of it is backed by the host, and restores the old order at the end. Then every run
writes into memory the guest already holds, as on a machine without a balloon.
"""
import contextlib, mmap, os

ORDER = "/sys/module/page_reporting/parameters/page_reporting_order"
OFF = 11


def reporting_order():
    """The page reporting order, or None where the kernel has no free page reporting."""
    try:
        with open(ORDER) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def describe():
    order = reporting_order()
    if order is None:
        return "no free page reporting on this machine"
    if order >= OFF:
        return f"free page reporting off (page_reporting_order {order})"
    return f"free page reporting on (page_reporting_order {order}): big-file runs vary with it"


def touch_free_memory(log, margin=2 << 30):
    """Writes one byte per page into all free memory but `margin`, then gives it back."""
    with open("/proc/meminfo") as f:
        free = next(int(line.split()[1]) << 10 for line in f if line.startswith("MemFree:"))
    size = max(0, free - margin) & ~((64 << 20) - 1)
    if size == 0:
        return
    log(f"touching {size >> 30} GiB of free memory once")
    m = mmap.mmap(-1, size)
    block = b"\1" * (64 << 20)
    for off in range(0, size, len(block)):
        m[off:off + len(block)] = block
    m.close()


@contextlib.contextmanager
def steady(log):
    """Free page reporting off and the free memory backed, for the duration of the block."""
    old = reporting_order()
    if old is None or old >= OFF:
        yield
        return
    if not os.access(ORDER, os.W_OK):
        raise SystemExit(f"--steady-memory: cannot write {ORDER} (run as root)")
    with open(ORDER, "w") as f:
        f.write(str(OFF))
    try:
        touch_free_memory(log)
        yield
    finally:
        with open(ORDER, "w") as f:
            f.write(str(old))
