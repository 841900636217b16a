"""Start a training job's command under its limits: `python -m ... --memory-bytes N -- CMD...`.

A launcher rather than `Popen(preexec_fn=...)`: code run between fork and exec in a server
with threads can deadlock, while this runs in a fresh interpreter. It sets, then execs the
command (which keeps all three):

- an address-space limit (`RLIMIT_AS`): a job that asks for more gets MemoryError or dies,
  and the server and its models keep their memory;
- a lower CPU priority (`nice`), so predictions go first on a shared machine;
- a parent-death signal (Linux `PR_SET_PDEATHSIG`): when the server dies, its job dies with
  it instead of training on unattended; the next round starts (or resumes) from the store.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import resource
import signal
import sys

PR_SET_PDEATHSIG = 1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="job_process")
    parser.add_argument("--memory-bytes", type=int, required=True)
    parser.add_argument("--nice", type=int, default=0)
    parser.add_argument("--parent", type=int, default=0)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command to run")
    if args.memory_bytes > 0:  # 0: no limit (CUDA maps far more address space than it uses)
        resource.setrlimit(resource.RLIMIT_AS, (args.memory_bytes, args.memory_bytes))
    if args.nice:
        os.nice(args.nice)
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        # The server may have died before the signal was asked for.
        if args.parent and os.getppid() != args.parent:
            sys.exit(1)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
