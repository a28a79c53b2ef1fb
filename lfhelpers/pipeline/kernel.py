"""The kernel the runner starts: ipykernel, with native (C/C++) stderr kept out of the notebook.

TensorFlow's C++ start-up lines (CUDA probing on a machine without a GPU, oneDNN notices, absl's
"before InitializeLog" warning) are written straight to file descriptor 2, whatever
``TF_CPP_MIN_LOG_LEVEL`` says, and ipykernel would copy them into the executed notebook and its
HTML report as red blocks. This launcher points descriptor 2 at a log file of the run
(``$LF_KERNEL_NATIVE_LOG``, else the null device) and starts ipykernel without copying
descriptor-level output. Python's own warnings and progress bars still reach the notebook,
through ``sys.stderr``.

Run as ``python -m lfhelpers.pipeline.kernel -f CONNECTION_FILE`` (the runner's kernelspec).
"""

from __future__ import annotations

import os
import sys

#: Environment variable naming the file that receives the kernel's native stderr.
NATIVE_LOG_ENV = "LF_KERNEL_NATIVE_LOG"


def main() -> None:
    """Redirect descriptor 2, then hand over to ipykernel."""
    target = os.environ.get(NATIVE_LOG_ENV) or os.devnull
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 2)
    os.close(fd)
    from ipykernel import kernelapp

    kernelapp.launch_new_instance(argv=[*sys.argv[1:], "--IPKernelApp.capture_fd_output=False"])


if __name__ == "__main__":
    main()
