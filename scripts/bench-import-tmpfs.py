#!/usr/bin/env python3
"""Interleaved wall-time benchmark of import commands against their tar peers (issue 9).

Usage: bench-import-tmpfs.py RUNS NAME=CMD [NAME=CMD ...]

Before every run the scratch directory $W (default /dev/shm/layerctl-bench, tmpfs) is
emptied and $W/t made; commands write below $W (e.g. `tar -xf X -C $W/t`,
`layerctl --root $W/r import X`). Round 0 is a warm-up; the order of the commands
rotates every round so that drift of a loaded machine hits all alike. Prints the
median, quartiles and median CPU (user+sys of the children) per command and the
ratio of medians to the first command.
"""
import os, resource, shutil, statistics as st, subprocess, sys, time

W = os.environ.get("W", "/dev/shm/layerctl-bench")


def prep():
    shutil.rmtree(W, ignore_errors=True)
    os.makedirs(os.path.join(W, "t"))


runs = int(sys.argv[1])
cmds = [a.split("=", 1) for a in sys.argv[2:]]
times = {n: [] for n, _ in cmds}
cpu = {n: [] for n, _ in cmds}
for i in range(runs + 1):
    k = i % len(cmds)
    for n, c in cmds[k:] + cmds[:k]:
        prep()
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        subprocess.run(c, shell=True, check=True, stdout=subprocess.DEVNULL)
        dt = time.perf_counter() - t
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        if i > 0:
            times[n].append(dt)
            cpu[n].append(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)
shutil.rmtree(W, ignore_errors=True)
base = st.median(times[cmds[0][0]])
print(f"| command | median | p25 | p75 | CPU (median) | vs {cmds[0][0]} |")
print("| --- | ---: | ---: | ---: | ---: | ---: |")
for n, _ in cmds:
    q = st.quantiles(times[n], n=4)
    print(f"| {n} | {st.median(times[n])*1000:.0f} ms | {q[0]*1000:.0f} ms | {q[2]*1000:.0f} ms "
          f"| {st.median(cpu[n])*1000:.0f} ms | {st.median(times[n])/base:.2f} |")
print(f"\n{runs} runs each, load average {os.getloadavg()[0]:.1f}")
