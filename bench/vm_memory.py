"""The guest-memory state of a VM with free page reporting, which decides big-file timings.

A virtio balloon with free page reporting hands the guest's free memory back to the host. The
first write to such memory is slow (measured here: 0.48 GB/s for the first pass over 2 GiB of
fresh anonymous memory, 9.4 GB/s for the second), so a run that fills the page cache with
reported memory takes longer for 1 GiB than the same run in memory the guest has already used,
for any tool. Which state a run meets is not under the benchmark's control, and the benchmark
leaves the machine's settings as they are: it only says which state the machine was in, and the
tables give the spread of the runs.
"""

ORDER = "/sys/module/page_reporting/parameters/page_reporting_order"

# An order above the largest block the buddy allocator has: no block is reported.
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
