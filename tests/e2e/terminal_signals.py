"""Start `dsdeploy local up` as a terminal's shell would: with SIGINT and SIGHUP at their defaults.

A test run launched as `nohup make test &` passes its ignored SIGINT and SIGHUP on to every child (a shell
ignores both for a background job, nohup ignores SIGHUP), and `local up` rightly leaves an ignored SIGHUP
ignored (the user asked for the stack to outlive the terminal), and Python installs no Ctrl-C handler
when SIGINT is ignored. The tests play a user at a terminal, so they start it with the defaults.
"""

from __future__ import annotations

import signal


def terminal_defaults() -> None:
    """``preexec_fn`` for ``subprocess.Popen``: SIGINT and SIGHUP back to their default actions."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
