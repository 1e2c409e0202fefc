"""Processes that stop when the process that started them goes away, even when it is SIGKILLed.

Linux's ``prctl(PR_SET_PDEATHSIG, sig)`` asks the kernel to send ``sig`` to a process when its parent dies
(the setting survives ``exec``). `dsdeploy local up` sets it on itself (SIGHUP: stop like a closed
terminal when `make` or the shell that started it dies) and on the model server and router it starts
(SIGTERM: they drain and exit when `local up` dies). The children are started through this module's
``main`` (``python -m dsdeploy.parent_death --parent PID --signal TERM -- command...``), which sets the
signal and then ``exec``s the command: no ``preexec_fn`` (unsafe with threads), and no extra process.
Elsewhere than Linux this is a no-op, and the normal stop paths (Ctrl-C, SIGTERM, SIGHUP) still apply.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def set_parent_death_signal(signum: int) -> bool:
    """Ask the kernel for ``signum`` when this process's parent dies; False where that is not available."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) == 0


def wrap(command: list[str], signum: int = signal.SIGTERM) -> list[str]:
    """``command`` started so that it gets ``signum`` when the calling process dies."""
    return [
        sys.executable,
        "-m",
        "dsdeploy.parent_death",
        "--parent",
        str(os.getpid()),
        "--signal",
        signal.Signals(signum).name.removeprefix("SIG"),
        "--",
        *command,
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dsdeploy.parent_death")
    parser.add_argument("--parent", type=int, required=True, help="pid of the parent that must be alive")
    parser.add_argument("--signal", default="TERM", help="signal to get when it dies (TERM, HUP, KILL, ...)")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given")
    signum = signal.Signals["SIG" + args.signal.upper().removeprefix("SIG")]
    set_parent_death_signal(signum)
    if os.getppid() != args.parent:  # the parent died before the signal was asked for
        return 128 + signum
    os.execvp(command[0], command)
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main())
