"""The kernel the runner starts: ipykernel, with native (C/C++) stderr kept out of the notebook.

TensorFlow's C++ start-up lines (CUDA probing on a machine without a GPU, oneDNN notices, absl's
"before InitializeLog" warning) are written straight to file descriptor 2, whatever
``TF_CPP_MIN_LOG_LEVEL`` says, and ipykernel would copy them into the executed notebook and its
HTML report as red blocks. This launcher points descriptor 2 at a log file of the run
(``$LF_KERNEL_NATIVE_LOG``, else the null device) and starts ipykernel without copying
descriptor-level output. Python's own warnings and progress bars still reach the notebook,
through ``sys.stderr``.

``$LF_KERNEL_NICE`` (the runner's background kernelspec) lowers the kernel's CPU priority, and
so that of the worker processes it starts, by that many steps: a notebook run side by side with
one that the rest of the run waits for then takes the cores that one leaves idle, not its share.

Run as ``python -m lfhelpers.pipeline.kernel -f CONNECTION_FILE`` (the runner's kernelspec).
"""

from __future__ import annotations

import os
import sys

#: Environment variable naming the file that receives the kernel's native stderr.
NATIVE_LOG_ENV = "LF_KERNEL_NATIVE_LOG"
#: Environment variable: steps by which the kernel lowers its CPU priority (``os.nice``).
NICE_ENV = "LF_KERNEL_NICE"


def lower_priority(steps: int) -> None:
    """Lower this process's CPU priority by ``steps`` (nothing when 0 or not possible).

    Jupyter starts each kernel in a session of its own, and Linux schedules sessions as groups
    (autogroup) that share the CPU equally whatever their members' nice values: the group's
    own nice value (``/proc/self/autogroup``) is what counts between kernels, so both are set
    (the group's only when this process leads its session, i.e. the group is its own).
    """
    if steps <= 0 or not hasattr(os, "nice"):  # not on Windows: the kernel runs as usual
        return
    os.nice(steps)
    if os.getsid(0) != os.getpid():  # the group is not the kernel's own: leave it alone
        return
    try:
        with open("/proc/self/autogroup", "w", encoding="ascii") as fh:
            fh.write(str(steps))
    except OSError:  # no autogroup (kernel option off, not Linux): the nice value applies
        pass


def main() -> None:
    """Lower the priority when asked, redirect descriptor 2, then hand over to ipykernel."""
    lower_priority(int(os.environ.get(NICE_ENV) or 0))
    target = os.environ.get(NATIVE_LOG_ENV) or os.devnull
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 2)
    os.close(fd)
    from ipykernel import kernelapp

    kernelapp.launch_new_instance(argv=[*sys.argv[1:], "--IPKernelApp.capture_fd_output=False"])


if __name__ == "__main__":
    main()
