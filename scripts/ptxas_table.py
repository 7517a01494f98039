#!/usr/bin/env python3
"""Turns `ptxas -v` output (stdin) into a per-kernel table of registers, shared memory and
spills; exits 1 if any kernel spills registers to local memory.

ptxas prints, per entry: "Compiling entry function 'NAME' for 'sm_XX'", then
"N bytes stack frame, N bytes spill stores, N bytes spill loads", then
"Used R registers, ... S bytes smem, ...".
"""
import re
import sys

rows, cur = [], None
for line in sys.stdin:
    if m := re.search(r"Compiling entry function '(\w+)' for '(sm_\d+)'", line):
        cur = {"kernel": m[1], "arch": m[2], "regs": 0, "smem": 0, "stack": 0, "st": 0, "ld": 0}
        rows.append(cur)
    elif cur and (m := re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)):
        cur["stack"], cur["st"], cur["ld"] = int(m[1]), int(m[2]), int(m[3])
    elif cur and (m := re.search(r"Used (\d+) registers", line)):
        cur["regs"] = int(m[1])
        if s := re.search(r"(\d+) bytes smem", line):
            cur["smem"] = int(s[1])

if not rows:
    sys.exit("ptxas reported no kernels")
print(f"{'kernel':<28} {'arch':<6} {'regs':>4} {'smem B':>7} {'stack B':>7} {'spill st/ld B':>13}")
for r in sorted(rows, key=lambda r: (r["kernel"], r["arch"])):
    print(f"{r['kernel']:<28} {r['arch']:<6} {r['regs']:>4} {r['smem']:>7} {r['stack']:>7} {r['st']:>6}/{r['ld']:<6}")
spills = [r for r in rows if r["st"] or r["ld"]]
for r in spills:
    print(f"SPILL: {r['kernel']} on {r['arch']} spills {r['st']} B stores / {r['ld']} B loads", file=sys.stderr)
print(f"{len(rows)} kernel builds, {len(spills)} with register spills")
sys.exit(1 if spills else 0)
