#!/usr/bin/env python3
"""Writes the README's results section from the files scripts/bench-results.sh produced.

Reads bench-results/readme/ (commands.txt, peer/peer.md, serve/*.json, sweep/sweep-cap.json,
simulate/proof.md), copies the plots the section shows into docs/bench/, and replaces what lies
between the README's `<!-- bench-results:begin -->` and `<!-- bench-results:end -->` markers.
Nothing here measures or invents a figure: every number comes from those files.
"""
import argparse
import json
import pathlib
import shutil
import sys

BEGIN, END = "<!-- bench-results:begin -->", "<!-- bench-results:end -->"


def load(path):
    return json.loads(path.read_text()) if path.exists() else None


def fmt(v, digits=1, unit=""):
    if v is None:
        return "n/a"
    return f"{v:,.{digits}f}{unit}"


def commands(results):
    folder = results / "commands"
    return {p.stem: p.read_text().strip() for p in folder.glob("*.txt")} if folder.exists() else {}


def simd():
    """What the CPU offers of the SIMD sets gridserve's kernels are written for."""
    try:
        flags = next(l for l in open("/proc/cpuinfo") if l.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown"
    return ", ".join(f"{name}: {'yes' if flag in flags else 'no'}" for name, flag in
                     [("AVX2", "avx2"), ("AVX-512 VNNI", "avx512_vnni")])


def md_tables(path, first_only=False):
    """The markdown table lines of a file (the first table only, if asked)."""
    if not path.exists():
        return None
    lines, seen_table = [], False
    for line in path.read_text().splitlines():
        if line.startswith("|"):
            lines.append(line)
            seen_table = True
        elif seen_table and first_only:
            break
    return "\n".join(lines)


def serve_row(name, r):
    if r is None:
        return f"| {name} | (not run) | | | | | | |"
    return (
        f"| {name} | {r['completed']}/{r['failed']} | {fmt(r['output_throughput'])} | "
        f"{fmt(r.get('median_ttft_ms'), 0)} / {fmt(r.get('p99_ttft_ms'), 0)} | "
        f"{fmt(r.get('median_tpot_ms'))} / {fmt(r.get('p99_tpot_ms'))} | "
        f"{fmt(r.get('p99_e2el_ms'), 0)} | {fmt(r.get('output_tokens_per_joule'), 3)} | "
        f"{fmt(r.get('avg_power_watts'))} |"
    )


def section_peer(results, cmds):
    table = md_tables(results / "peer" / "peer.md")
    if table is None:
        return []
    machine = [l for l in (results / "peer" / "peer.md").read_text().splitlines() if l.startswith("Machine:")]
    return [
        "### The CPU engine against llama.cpp (`bench peer`)",
        "",
        f"`{cmds.get('peer', 'gridserve bench peer')}`",
        "",
        *machine,
        f"SIMD: {simd()}.",
        "",
        table,
        "",
    ]


def section_serve(results, cmds):
    ours, peer = load(results / "serve" / "gridserve-cpu.json"), load(results / "serve" / "llama-cpp-cpu.json")
    if ours is None and peer is None:
        return []
    any_run = ours or peer
    ratio = None
    if ours and peer and peer.get("output_tokens_per_joule") and ours.get("output_tokens_per_joule"):
        ratio = ours["output_tokens_per_joule"] / peer["output_tokens_per_joule"]
    return [
        "### The same open-loop load against both servers (`bench serve`)",
        "",
        f"{any_run['num_prompts']} requests, Poisson at {any_run['request_rate']}/s, "
        f"{round(sum(any_run['input_lens']) / max(len(any_run['input_lens']), 1))} tokens in "
        f"(server count), {max(any_run['output_lens'])} out (`ignore_eos`); one server at a time, "
        "energy from this machine's sensor for both (`--energy-source local`: "
        f"{any_run['energy']['detail']}).",
        "",
        "| server | ok/failed | output tok/s | TTFT p50 / p99 (ms) | TPOT p50 / p99 (ms) | E2EL p99 (ms) | output tok/J | mean W |",
        "|---|---|---|---|---|---|---|---|",
        serve_row("gridserve", ours),
        serve_row("llama.cpp `llama-server -np 16`", peer),
        "",
        f"Tokens per joule, gridserve ÷ llama.cpp: **{fmt(ratio, 2, '×')}**." if ratio else "",
        "",
        "```sh",
        cmds.get("serve-gridserve", ""),
        cmds.get("serve-llama", ""),
        "```",
        "",
    ]


def compliance_table(c):
    rows = ["| from (s) | cap (W) | ack (s) | settle (s) | over cap (s) | mean / max W | per tier: ok/failed, p99 TTFT ms |",
            "|---|---|---|---|---|---|---|"]
    for st in c["steps"]:
        cap = st["step"]["cap_watts"]
        tiers = "; ".join(f"{t['tier']} {t['completed']}/{t['failed']}, {t['p99_ttft_ms']:.0f}" for t in st["tiers"])
        rows.append(
            f"| {st['step']['at_s']:.0f} | {fmt(cap, 0) if cap else 'lifted'} | {fmt(st['ack_s'], 2)} | "
            f"{fmt(st['settle_s'], 2)} | {st['seconds_over_cap']:.2f} | "
            f"{fmt(st['mean_power_watts'])} / {fmt(st['max_power_watts'])} | {tiers} |"
        )
    return rows


def section_twin(results, cmds, plots):
    r = load(results / "serve" / "gridserve-twin.json")
    if r is None:
        return []
    c = r["envelope_compliance"]
    tiers = ["| tier | ok/failed | output tok/s | TTFT p99 (ms) | E2EL p99 (ms) |", "|---|---|---|---|---|"]
    for name, t in r["tiers"].items():
        tiers.append(f"| {name} | {t['completed']}/{t['failed']} | {fmt(t['output_throughput'])} | "
                     f"{fmt(t.get('p99_ttft_ms'), 0)} | {fmt(t.get('p99_e2el_ms'), 0)} |")
    e = r["energy"]
    device = ""
    if e.get("device_joules") is not None:
        device = (f" By the twin's own energy counter ({fmt(e['device_joules'], 0)} J: its GPU step time plus the "
                  f"engine's idle gaps, the steps' CPU time not being GPU time): "
                  f"{fmt(e['device_output_tokens_per_joule'], 3)} tokens/J; the twin's sampled power averaged "
                  f"{fmt(e['avg_power_watts'])} W.")
    lines = [
        "### An envelope scenario on the H100 twin (`bench serve --envelope-scenario`)",
        "",
        "`gridserve serve --power twin:h100` (the real model on the CPU, every engine step also "
        "run on the GPU twin, whose power the controller holds under the cap), "
        f"`config/envelopes/step-down.toml` posted during the run. Output {fmt(r['output_throughput'])} tok/s, "
        f"{fmt(r['output_tokens_per_joule'], 2)} tokens/J ({r['energy']['detail']}), "
        f"{c['seconds_over_cap']:.2f} s of {c['seconds_capped']:.1f} s under a cap with the 1 s average over it."
        + device,
        "",
        *compliance_table(c),
        "",
        *tiers,
        "",
        "```sh",
        cmds.get("serve-twin", ""),
        "```",
        "",
    ]
    for name, alt in [("gridserve-twin-power.svg", "power vs cap and throughput"), ("gridserve-twin-e2el-cdf.svg", "E2EL CDF per tier")]:
        if (plots / name).exists():
            lines.append(f"![{alt}](docs/bench/{name})")
    return lines + [""]


def section_sweep(results, cmds, plots):
    s = load(results / "sweep" / "sweep-cap.json")
    if s is None:
        return []
    rows = ["| cap (W) | ok/failed | output tok/s | p99 E2EL (ms) | tok/J (requests) | tok/J (twin's counter, idle gaps included) | mean W | on the front |",
            "|---|---|---|---|---|---|---|---|"]
    for r in s["rows"]:
        rows.append(f"| {r['value']:.0f} | {r['completed']}/{r['failed']} | {fmt(r['output_throughput'])} | "
                    f"{fmt(r['p99_latency_ms'], 0)} | {fmt(r['output_tokens_per_joule'], 3)} | "
                    f"{fmt(r.get('device_output_tokens_per_joule'), 3)} | "
                    f"{fmt(r['avg_power_watts'])} | {'yes' if r['on_front'] else ''} |")
    lines = ["### Tokens per joule against p99 latency, by cap (`bench sweep --param cap`)", "", *rows, "",
             "```sh", cmds.get("sweep-cap", ""), "```", ""]
    if (plots / "sweep-cap.svg").exists():
        lines.append("![Pareto front of tokens/J vs p99 E2EL](docs/bench/sweep-cap.svg)")
    return lines + [""]


def section_proof(results, cmds):
    table = md_tables(results / "simulate" / "proof.md", first_only=True)
    if table is None:
        return []
    return ["### The twin's grid-response proof (`simulate-proof`)", "",
            f"`{cmds.get('proof', 'gridserve simulate-proof')}` (columns and targets: see "
            "[Grid-response proof](#grid-response-proof)):", "", table, ""]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--results", type=pathlib.Path, required=True)
    ap.add_argument("--readme", type=pathlib.Path, required=True)
    ap.add_argument("--plots", type=pathlib.Path, required=True)
    a = ap.parse_args()
    a.plots.mkdir(parents=True, exist_ok=True)
    for src in [a.results / "serve" / "gridserve-twin-power.svg", a.results / "serve" / "gridserve-twin-e2el-cdf.svg",
                a.results / "sweep" / "sweep-cap.svg"]:
        if src.exists():
            shutil.copy(src, a.plots / src.name)
    cmds = commands(a.results)
    body = [BEGIN, "",
            "Generated by `scripts/bench-results.sh` (raw results in `bench-results/readme/`); "
            "every figure below is from that run on this machine.", ""]
    body += section_peer(a.results, cmds)
    body += section_serve(a.results, cmds)
    body += section_twin(a.results, cmds, a.plots)
    body += section_sweep(a.results, cmds, a.plots)
    body += section_proof(a.results, cmds)
    body.append(END)
    text = a.readme.read_text()
    if BEGIN not in text or END not in text:
        sys.exit(f"{a.readme}: the markers {BEGIN} / {END} are missing")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    a.readme.write_text(head + "\n".join(body) + tail)


if __name__ == "__main__":
    main()
