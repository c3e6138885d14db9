#!/usr/bin/env python3
"""How much of an import ran with fewer than two of its threads runnable (issue 9).

Usage: bench-import-sched.py RUNS NAME=CMD [NAME=CMD ...]

Each command runs RUNS times (commands alternating, $W emptied and $W/t made before
each run, default W=/dev/shm/layerctl-bench) under `perf record -e sched:sched_switch
-e sched:sched_wakeup ...`; from the trace, a thread of the command's process counts as
runnable from its wakeup (or a preemption) until it blocks. Prints per run the traced
span and the time with 0 or 1 runnable threads, i.e. when one of two cores could not
be used by the import whatever the rest of the machine did, and which thread ran alone
then. This depends far less on other load than wall time does (perf data in $OUT,
default /var/tmp/layerctl-bench/sched).
"""
import os, re, shutil, statistics as st, subprocess, sys

W = os.environ.get("W", "/dev/shm/layerctl-bench")
OUT = os.environ.get("OUT", "/var/tmp/layerctl-bench/sched")
EVENTS = ["sched:sched_switch", "sched:sched_wakeup", "sched:sched_wakeup_new",
          "sched:sched_process_exit"]


def analyse(data):
    out = subprocess.run(["perf", "script", "-i", data, "-F", "comm,tid,time,event,trace"],
                         capture_output=True, text=True).stdout
    ev = []
    for line in out.splitlines():
        m = re.match(r"\s*(\S+)\s+(\d+)\s+([\d.]+):\s+(\S+):\s+(.*)", line)
        if m:
            comm, tid, t, e, tr = m.groups()
            ev.append((float(t), int(tid), comm, e, tr))
    # The command: perf's child (sh) and the processes and threads it starts.
    root = ev[0][1]
    ours, name = {root}, {root: "main"}
    for t, tid, comm, e, tr in ev:
        if e.startswith("sched:sched_wakeup_new") and tid in ours:
            ours.add(int(re.search(r"pid=(\d+)", tr).group(1)))
        if e.startswith("sched:sched_switch") and tid in ours and tid != root:
            name[tid] = comm
    state, last, alone, low = {root: True}, ev[0][0], {}, 0.0
    for t, tid, comm, e, tr in ev:
        run = [name.get(k, str(k)) for k in ours if state.get(k)]
        if len(run) <= 1:
            low += t - last
            key = run[0] if run else "none"
            alone[key] = alone.get(key, 0.0) + t - last
        last = t
        if e.startswith("sched:sched_switch"):
            m = re.search(r"prev_pid=(\d+) prev_prio=\d+ prev_state=(\S+) ==> "
                          r"next_comm=.* next_pid=(\d+)", tr)
            prev, prev_state, nxt = int(m.group(1)), m.group(2), int(m.group(3))
            if prev in ours:
                state[prev] = prev_state.startswith("R")
            if nxt in ours:
                state[nxt] = True
        elif e.startswith("sched:sched_wakeup"):
            p = int(re.search(r"pid=(\d+)", tr).group(1))
            if p in ours:
                state[p] = True
        elif e.startswith("sched:sched_process_exit"):
            state[int(re.search(r"pid=(\d+)", tr).group(1))] = False
    return ev[-1][0] - ev[0][0], low, alone


runs = int(sys.argv[1])
cmds = [a.split("=", 1) for a in sys.argv[2:]]
os.makedirs(OUT, exist_ok=True)
share = {n: [] for n, _ in cmds}
for i in range(runs):
    for n, c in cmds:
        shutil.rmtree(W, ignore_errors=True)
        os.makedirs(os.path.join(W, "t"))
        data = os.path.join(OUT, f"{n}-{i}.data")
        rec = ["perf", "record", "-q", "-o", data] + sum((["-e", e] for e in EVENTS), [])
        subprocess.run(rec + ["--", "sh", "-c", c], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        span, low, alone = analyse(data)
        share[n].append(low / span)
        top = ", ".join(f"{k} {v * 1000:.1f}" for k, v in sorted(alone.items(), key=lambda x: -x[1]))
        print(f"{n} run {i}: span {span * 1000:.0f} ms, <= 1 runnable {low * 1000:.1f} ms "
              f"({100 * low / span:.0f} %): {top}")
shutil.rmtree(W, ignore_errors=True)
for n, _ in cmds:
    print(f"{n}: <= 1 runnable {100 * st.mean(share[n]):.0f} % of the span (mean of {runs}), "
          f"range {100 * min(share[n]):.0f}-{100 * max(share[n]):.0f} %")
print(f"load average {os.getloadavg()[0]:.1f}")
