#!/usr/bin/env python3
"""Aggregates scripts/bench_remedies.sh's runs: per variant and seed the eval figures and the
alarms found in the run's log; per variant mean ± sd over seeds. Writes one JSON file, prints
one JSON line per run and the Markdown table of docs/BENCHMARKS.md."""

import argparse
import json
import os
import platform
import re
import statistics
import sys
from datetime import date

ALARMS = {
    "mode-collapse": re.compile(r"alarm: mode collapse"),
    "vanishing-gradient": re.compile(r"alarm: generator gradient norm"),
    "divergence": re.compile(r"alarm: D\(real\) - D\(fake\)"),
}


def run_result(folder):
    report = json.load(open(os.path.join(folder, "eval.json")))
    start, end = map(float, open(os.path.join(folder, "seconds")).read().split())
    log = open(os.path.join(folder, "log.txt")).read()
    modes = report["modes"] or {}
    return {
        "kimg": report["kimg"],
        "modes_covered": modes.get("covered"),
        "modes": modes.get("modes"),
        "unrecognised": modes.get("unrecognised"),
        "samples": modes.get("samples"),
        "kl_to_uniform": modes.get("kl_to_uniform"),
        "swd_x1e3": report["swd"]["mean"],
        "swd_real_floor_x1e3": report["swd_real_floor"]["mean"],
        "msssim_fake": report["msssim_fake"],
        "msssim_real": report["msssim_real"],
        "train_seconds": round(end - start, 1),
        "alarms": sorted(name for name, pattern in ALARMS.items() if pattern.search(log)),
        "alarm_lines": [l for l in log.splitlines() if "alarm:" in l],
    }


def stats(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "sd": sd, "n": len(values)}


def fmt(s, digits):
    if s is None:
        return "—"
    return f"{s['mean']:.{digits}f} ± {s['sd']:.{digits}f}"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("work")
    parser.add_argument("out")
    parser.add_argument("--kimg", type=float, required=True)
    parser.add_argument("--modes", type=int, required=True)
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument("--wall-seconds", type=int, required=True)
    parser.add_argument("--variants", nargs="+", required=True)
    args = parser.parse_args()

    variants = []
    for name in args.variants:
        role = open(os.path.join(args.work, f"{name}.role")).read().strip()
        runs = []
        for entry in sorted(os.listdir(args.work)):
            m = re.fullmatch(re.escape(name) + r"-seed(\d+)", entry)
            if not m:
                continue
            folder = os.path.join(args.work, entry)
            run = {"seed": int(m.group(1)), **run_result(folder)}
            run["flags"] = open(os.path.join(folder, "flags")).read().strip()
            print(json.dumps({"bench": "remedies", "variant": name, **run}))
            runs.append(run)
        fired = sorted({a for r in runs for a in r["alarms"]})
        variants.append({
            "variant": name,
            "role": role,
            "flags": runs[0]["flags"] if runs else "",
            "seeds": [r["seed"] for r in runs],
            "modes_covered": stats([r["modes_covered"] for r in runs]),
            "kl_to_uniform": stats([r["kl_to_uniform"] for r in runs]),
            "swd_x1e3": stats([r["swd_x1e3"] for r in runs]),
            "msssim_fake": stats([r["msssim_fake"] for r in runs]),
            "train_seconds": stats([r["train_seconds"] for r in runs]),
            "alarms_fired": {a: sum(a in r["alarms"] for r in runs) for a in fired},
            "runs": runs,
        })
    result = {
        "bench": "remedies",
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "modes": args.modes,
        "resolution": 16,
        "kimg": args.kimg,
        "parallel_runs": args.jobs,
        "wall_seconds": args.wall_seconds,
        "variants": variants,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    os.replace(tmp, args.out)

    print("| setup | role | modes covered (of %d) | KL to uniform | SWD ×1e3 | MS-SSIM gen | train s | alarms fired (runs) |" % args.modes, file=sys.stderr)
    print("|---|---|---|---|---|---|---|---|", file=sys.stderr)
    for v in variants:
        alarms = ", ".join(f"{a} {n}/{len(v['runs'])}" for a, n in v["alarms_fired"].items()) or "none"
        print(
            f"| {v['variant']} | {v['role']} | {fmt(v['modes_covered'], 1)} | {fmt(v['kl_to_uniform'], 2)} "
            f"| {fmt(v['swd_x1e3'], 0)} | {fmt(v['msssim_fake'], 3)} | {fmt(v['train_seconds'], 0)} | {alarms} |",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
