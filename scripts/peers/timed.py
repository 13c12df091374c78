#!/usr/bin/env python3
"""Run a command, record its wall time and CPU time (getrusage of the children: user + system) and peak RSS.

Usage: timed.py TIMES.json -- CMD ARG...      (exit status = the command's; TIMES.json is written either way)
"""
import json
import resource
import subprocess
import sys
import time


def main():
    out, sep, cmd = sys.argv[1], sys.argv[2], sys.argv[3:]
    assert sep == "--" and cmd, __doc__
    t0 = time.perf_counter()
    rc = subprocess.call(cmd)
    wall = time.perf_counter() - t0
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    doc = {"cmd": cmd, "rc": rc, "wall_s": round(wall, 3), "cpu_s": round(ru.ru_utime + ru.ru_stime, 3),
           "user_s": round(ru.ru_utime, 3), "sys_s": round(ru.ru_stime, 3),
           "peak_rss_mib": round(ru.ru_maxrss / 1024, 1)}
    with open(out, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    sys.exit(rc)


if __name__ == "__main__":
    main()
