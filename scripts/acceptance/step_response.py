#!/usr/bin/env python3
"""Step responses from a 10 ms nvidia-smi trace: for each command (a line "EPOCH_SECONDS
what target" in commands.txt), the delay until the SM clock first reaches the target (clock
locks) and until power settles within 5 % of its new level (power limits and clock locks).

usage: step_response.py TRACE.csv COMMANDS.txt
TRACE: "YYYY/MM/DD HH:MM:SS.mmm, watts, sm_mhz" lines (nvidia-smi --format=csv,noheader,nounits).
"""
import datetime
import statistics
import sys


def parse_trace(path):
    out = []
    for line in open(path):
        parts = [p.strip() for p in line.split(",")]
        try:
            t = datetime.datetime.strptime(parts[0], "%Y/%m/%d %H:%M:%S.%f").timestamp()
            out.append((t, float(parts[1]), float(parts[2])))
        except (ValueError, IndexError):
            continue
    return out


trace = parse_trace(sys.argv[1])
commands = [l.split() for l in open(sys.argv[2]) if l.strip()]
if len(trace) < 10:
    sys.exit("trace has too few samples")
period_ms = statistics.median(b[0] - a[0] for a, b in zip(trace, trace[1:])) * 1000
print(f"trace: {len(trace)} samples, median period {period_ms:.1f} ms")
print(f"{'command':<24} {'target':>8} {'clock reached ms':>17} {'power settled ms':>17} {'W before':>9} {'W after':>8}")
for i, (t0, what, target) in enumerate(commands):
    t0 = float(t0)
    t_end = float(commands[i + 1][0]) if i + 1 < len(commands) else trace[-1][0]
    before = [s for s in trace if t0 - 1.0 <= s[0] < t0]
    window = [s for s in trace if t0 <= s[0] < t_end]
    if not window or not before:
        print(f"{what:<24} {target:>8} {'(no samples)':>17}")
        continue
    clock_ms = "-"
    if what.startswith("lock-clock"):
        hit = next((s for s in window if abs(s[2] - float(target)) <= 0.05 * float(target)), None)
        clock_ms = f"{(hit[0] - t0) * 1000:.0f}" if hit else "never"
    tail = [s[1] for s in window if s[0] >= t_end - 1.0] or [window[-1][1]]
    level = statistics.mean(tail)
    settled = next((s for j, s in enumerate(window)
                    if all(abs(x[1] - level) <= 0.05 * level for x in window[j:])), None)
    power_ms = f"{(settled[0] - t0) * 1000:.0f}" if settled else "never"
    print(f"{what:<24} {target:>8} {clock_ms:>17} {power_ms:>17} {statistics.mean(s[1] for s in before):>9.1f} {level:>8.1f}")
