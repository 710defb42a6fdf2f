#!/usr/bin/env python3
"""Commits of the spool's size into a written file, from 1, 2 and 4
threads at once: fsyncs a second and the time each takes. It tells
whether two commits in flight would shorten a commit's wait on this
disk (BENCHMARKS.md, "Engine III targets, session 16").

Usage: benches/disk/fsync_parallel.py [DIR]  (default: the current one)
"""
import os
import sys
import threading
import time

COMMIT = 17000
COMMITS = 1000
SIZE = 64 << 20


def main():
    path = os.path.join(sys.argv[1] if len(sys.argv) > 1 else ".", "fsync_parallel.bin")
    with open(path, "wb") as f:
        f.write(b"\0" * SIZE)
        f.flush()
        os.fsync(f.fileno())
    fd = os.open(path, os.O_WRONLY)
    lock = threading.Lock()
    offset = [0]

    def worker(n, took):
        for _ in range(n):
            with lock:
                at = offset[0]
                offset[0] += COMMIT
            start = time.perf_counter()
            os.pwrite(fd, b"x" * COMMIT, at)
            os.fdatasync(fd)
            took.append(time.perf_counter() - start)

    try:
        for threads in (1, 2, 4, 1, 2, 4):
            offset[0] = 0
            took = []
            pool = [
                threading.Thread(target=worker, args=(COMMITS // threads, took))
                for _ in range(threads)
            ]
            began = time.perf_counter()
            for t in pool:
                t.start()
            for t in pool:
                t.join()
            elapsed = time.perf_counter() - began
            took.sort()
            print(
                f"{threads} threads: {round(len(took) / elapsed)} fsyncs/s, "
                f"mean {round(sum(took) / len(took) * 1e6)} µs, "
                f"p50 {round(took[len(took) // 2] * 1e6)} µs"
            )
    finally:
        os.close(fd)
        os.unlink(path)


if __name__ == "__main__":
    main()
