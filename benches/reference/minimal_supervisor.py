"""The issue's "minimal pidfd-driven supervisor", as a same-run reference for `benches/serve.rs`.

Usage: minimal_supervisor.py LOG_DIR N COMMAND...

Starts N copies of COMMAND, each in its own session with a cleared environment, stderr piped; appends
every stderr line to LOG_DIR/<n>.log (flushed per line); watches exits through pidfds and restarts a
child that exits; every 5 s reads each child's /proc/PID/stat (CPU, RSS) as a metrics sampler would.
Prints "ready" on stdout once all N run. On SIGTERM it terminates every session, reaps, and exits 0.
It is deliberately the least a supervisor does, in one thread with one epoll: a floor, not a rival.
"""

import os
import selectors
import signal
import subprocess
import sys
import time


def main():
    log_dir, n, command = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    os.makedirs(log_dir, exist_ok=True)
    sel = selectors.EpollSelector()
    children = {}

    def start(i):
        proc = subprocess.Popen(
            command, env={"PATH": "/usr/bin:/bin"}, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
        )
        log = open(os.path.join(log_dir, f"{i}.log"), "ab")
        pidfd = os.pidfd_open(proc.pid)
        os.set_blocking(proc.stderr.fileno(), False)
        sel.register(proc.stderr, selectors.EVENT_READ, ("log", i))
        sel.register(pidfd, selectors.EVENT_READ, ("exit", i))
        children[i] = (proc, log, pidfd)

    for i in range(n):
        start(i)
    print("ready", flush=True)

    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    next_sample = time.monotonic() + 5
    while not stopping:
        timeout = max(0.0, next_sample - time.monotonic())
        for key, _ in sel.select(timeout):
            kind, i = key.data
            proc, log, pidfd = children[i]
            if kind == "log":
                try:
                    data = os.read(proc.stderr.fileno(), 65536)
                except BlockingIOError:
                    continue
                if data:
                    log.write(data)
                    log.flush()
                else:
                    sel.unregister(proc.stderr)
            else:
                proc.wait()
                sel.unregister(pidfd)
                os.close(pidfd)
                try:
                    sel.unregister(proc.stderr)
                except KeyError:
                    pass
                proc.stderr.close()
                log.close()
                start(i)
        if time.monotonic() >= next_sample:
            next_sample += 5
            for proc, _, _ in children.values():
                try:
                    with open(f"/proc/{proc.pid}/stat") as stat:
                        stat.read()
                except OSError:
                    pass

    for proc, _, _ in children.values():
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for proc, _, _ in children.values():
        proc.wait()


if __name__ == "__main__":
    main()
