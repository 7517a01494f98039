#!/usr/bin/env python3
"""Joins `gridserve bench engine --json` runs with the nvidia-smi power samples taken during
each run into the measurements `gridserve twin fit` reads, and a CSV of every run.

usage: rows.py OUT_DIR GPU_NAME SHAPE PROMPT_TOKENS DECODE_TOKENS
OUT_DIR holds run-<clock>-<batch>.json (bench) and power-<clock>-<batch>.csv (nvidia-smi:
timestamp, power W, SM clock MHz, no header). Rows at clock "default" feed the fit.
"""
import csv
import json
import pathlib
import statistics
import sys

out, gpu, shape, prompt, decode = sys.argv[1:6]
out = pathlib.Path(out)
rows, table = [], []
for bench in sorted(out.glob("run-*-*.json")):
    _, clock, batch = bench.stem.split("-")
    report = json.loads(bench.read_text())
    decode_rows = [d for d in report["decode"] if d["batch"] == int(batch)]
    if not decode_rows:
        sys.exit(f"{bench}: no decode row for batch {batch}")
    d = decode_rows[0]
    samples = []
    with open(out / f"power-{clock}-{batch}.csv") as f:
        for rec in csv.reader(f):
            try:
                samples.append((float(rec[1]), float(rec[2])))
            except (ValueError, IndexError):
                continue  # "[N/A]" or a partial last line
    if not samples:
        sys.exit(f"power-{clock}-{batch}.csv: no samples")
    watts = statistics.mean(s[0] for s in samples)
    mhz = statistics.median(s[1] for s in samples)
    table.append([clock, batch, f"{report['prefill_tokens_per_s']:.1f}", f"{d['tokens_per_s']:.1f}",
                  f"{d['ms_per_step']:.2f}", f"{watts:.1f}", f"{mhz:.0f}", f"{d['tokens_per_s'] / watts:.3f}"])
    if clock == "default":
        rows.append({"running_seqs": int(batch), "power_watts": watts,
                     "output_tokens_per_second": d["tokens_per_s"],
                     "median_itl_seconds": d["ms_per_step"] / 1000.0})

header = ["clock", "batch", "prefill_tok_s", "decode_tok_s", "ms_per_step", "watts", "sm_mhz", "tok_per_J"]
with open(out / "throughput.csv", "w", newline="") as f:
    csv.writer(f).writerows([header] + table)
print("  ".join(f"{h:>13}" for h in header))
for r in table:
    print("  ".join(f"{c:>13}" for c in r))
json.dump({"gpu_name": gpu, "model": shape, "prompt_tokens": float(prompt),
           "output_tokens": float(decode), "rows": rows}, open(out / "measured.json", "w"), indent=1)
