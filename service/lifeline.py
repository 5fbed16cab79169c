"""Child processes that never outlive their parent, however the parent dies.

Linux: `PR_SET_PDEATHSIG` (prctl(2)) makes the kernel send the child SIGKILL the moment its
parent exits, even when the parent was SIGKILLed and could run no clean-up of its own.
Set in the child between fork and exec (`preexec_fn`), so it covers the exec'd program;
the parent's pid is checked afterwards because a parent that died before the prctl call
would not trigger it. SIGKILL rather than SIGTERM: a parent that dies this way stopped no
one in order, and a Celery worker's warm shutdown on SIGTERM would wait for its running
experiment to finish. Elsewhere (macOS) there is no such call: `die_with_parent` is a no-op.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(parent_pid: int) -> None:
    """In a child of `parent_pid`: be SIGKILLed when that parent exits (Linux)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        # A failure is not fatal: the supervisor still stops its children in order.
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    # The parent died before the prctl call (no signal will come): go now. Compared with
    # the pid, not with 1: in a container the parent may itself be pid 1.
    if os.getppid() != parent_pid:
        os._exit(1)


def preexec_die_with(parent_pid: int) -> Callable[[], None]:
    """A `preexec_fn` for `subprocess.Popen`: the child dies with `parent_pid`."""

    def preexec() -> None:
        die_with_parent(parent_pid)

    return preexec
