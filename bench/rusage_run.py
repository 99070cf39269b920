"""Run a command as a child of this small process; write its wall time and rusage as JSON.

    python bench/rusage_run.py OUT.json COMMAND [ARG ...]

Why a process in between: Linux records in a process's maxrss the peak resident set of the
memory image it replaced on exec. A tool started straight from bench/peers.py (hundreds of MB
by then) would report bench/peers.py's peak as its own. Started from this process, it inherits
this one's few MB instead. wait4 gives the rusage of the tool and every descendant it waited for.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main() -> None:
    out, command = sys.argv[1], sys.argv[2:]
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        try:
            os.execvp(command[0], command)
        finally:
            os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    seconds = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    with open(out, "w") as f:
        json.dump({"returncode": code, "seconds": seconds, "cpu_seconds": usage.ru_utime + usage.ru_stime,
                   "max_process_rss_bytes": usage.ru_maxrss * 1024}, f)
    sys.exit(code if code >= 0 else 128 - code)


if __name__ == "__main__":
    main()
