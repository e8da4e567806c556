#!/usr/bin/env python3
"""Aggregates scripts/bench_remedies.sh's runs: per variant and seed the eval figures and the
alarms found in the run's log; per variant mean ± sd over seeds. Writes one JSON file, prints
one JSON line per run and the Markdown table of docs/BENCHMARKS.md.

Each run is also classed by its outcome, from the final evaluation's mode count (the mode
classifier is independent of the alarms, which watch SWD and MS-SSIM during training):
collapsed below half the modes, healthy from three quarters up, partial between. The
alarm-vs-outcome table says whether the alarms fired on the runs that failed and stayed silent
on those that did not."""

import argparse
import json
import os
import platform
import re
import statistics
import sys
from datetime import date

ALARMS = {
    "mode-collapse": re.compile(r"alarm: (mode collapse|SWD jumped)"),
    "vanishing-gradient": re.compile(r"alarm: generator gradient norm"),
    "divergence": re.compile(r"alarm: D\(real\) - D\(fake\)"),
}


TICK = re.compile(r"INFO tick\s+\d+\s+kimg\s+([0-9.]+)")


def alarm_kimg(log):
    """{alarm: [kimg, ...]}: an alarm line is logged just before the line of the tick whose
    end raised it, so it is dated by the next tick line's kimg."""
    fired, pending = {}, []
    for line in log.splitlines():
        for name, pattern in ALARMS.items():
            if pattern.search(line):
                pending.append(name)
        tick = TICK.search(line)
        if tick and pending:
            for name in pending:
                fired.setdefault(name, []).append(float(tick.group(1)))
            pending = []
    return fired


def g_norm_min_ratio(folder):
    """The lowest tick-mean generator gradient norm over the largest before it, from the run's
    metrics.jsonl: the figure `alarms.min_g_grad_ratio` is compared with."""
    rows = []
    for path in sorted(os.listdir(os.path.join(folder, "runs"))):
        metrics = os.path.join(folder, "runs", path, "metrics.jsonl")
        if os.path.exists(metrics):
            rows = [json.loads(l) for l in open(metrics)]
    peak, lowest = None, None
    for row in rows:
        norm = row.get("Grad/G/norm")
        if norm is None:
            continue
        if peak:
            lowest = norm / peak if lowest is None else min(lowest, norm / peak)
        peak = norm if peak is None else max(peak, norm)
    return lowest


def ratio_range(runs):
    ratios = [r["g_norm_min_ratio"] for r in runs if r["g_norm_min_ratio"] is not None]
    return [min(ratios), max(ratios)] if ratios else None


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
        "alarm_kimg": alarm_kimg(log),
        "g_norm_min_ratio": g_norm_min_ratio(folder),
    }


def outcome(run):
    covered, modes = run["modes_covered"], run["modes"]
    if covered is None or not modes:
        return "unknown"
    if covered < modes / 2:
        return "collapsed"
    if covered >= 0.75 * modes:
        return "healthy"
    return "partial"


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
    parser.add_argument("--backend", default="cpu")
    parser.add_argument("--variants", nargs="+", required=True)
    args = parser.parse_args()

    variants = []
    for name in args.variants:
        role = open(os.path.join(args.work, f"{name}.role")).read().strip()
        runs, failed = [], []
        for entry in sorted(os.listdir(args.work)):
            m = re.fullmatch(re.escape(name) + r"-seed(\d+)", entry)
            if not m:
                continue
            folder = os.path.join(args.work, entry)
            flags = open(os.path.join(folder, "flags")).read().strip()
            error = os.path.join(folder, "error")
            if os.path.exists(error) or not os.path.exists(os.path.join(folder, "eval.json")):
                # Reported, and left out of the variant's figures.
                why = (open(error).read().strip() if os.path.exists(error) else
                       "the run ended without an eval.json (killed, or a step outside pgan "
                       "train/eval failed): see its train.log and eval.log")
                run = {"seed": int(m.group(1)), "flags": flags, "error": why}
                print(json.dumps({"bench": "remedies", "variant": name, **run}))
                failed.append(run)
                continue
            run = {"seed": int(m.group(1)), **run_result(folder)}
            run["flags"] = flags
            run["outcome"] = outcome(run)
            # Still firing at the run's final evaluation: a collapse that has not recovered, not
            # a transient one early in a stage.
            run["alarms_at_end"] = sorted(
                a for a, ks in run["alarm_kimg"].items() if any(k >= run["kimg"] - 1e-6 for k in ks)
            )
            print(json.dumps({"bench": "remedies", "variant": name, **run}))
            runs.append(run)
        fired = sorted({a for r in runs for a in r["alarms"]})
        late = sorted({a for r in runs for a in r["alarms_at_end"]})
        variants.append({
            "variant": name,
            "role": role,
            "flags": (runs or failed)[0]["flags"] if runs or failed else "",
            "seeds": [r["seed"] for r in runs],
            "modes_covered": stats([r["modes_covered"] for r in runs]),
            "kl_to_uniform": stats([r["kl_to_uniform"] for r in runs]),
            "swd_x1e3": stats([r["swd_x1e3"] for r in runs]),
            "msssim_fake": stats([r["msssim_fake"] for r in runs]),
            "train_seconds": stats([r["train_seconds"] for r in runs]),
            "alarms_fired": {a: sum(a in r["alarms"] for r in runs) for a in fired},
            "alarms_fired_at_end": {a: sum(a in r["alarms_at_end"] for r in runs) for a in late},
            # Per run the lowest ratio; over the seeds its range (for a failing setup the upper
            # end is the mildest saturation the alarm has to catch).
            "g_norm_min_ratio_range": ratio_range(runs),
            "runs": runs,
            "failed_runs": failed,
        })
    all_runs = [r for v in variants for r in v["runs"]]
    alarm_vs_outcome = {}
    for kind in ("collapsed", "partial", "healthy", "unknown"):
        runs = [r for r in all_runs if r["outcome"] == kind]
        if runs:
            alarm_vs_outcome[kind] = {
                "runs": len(runs),
                "any_alarm": sum(bool(r["alarms"]) for r in runs),
                "any_alarm_at_end": sum(bool(r["alarms_at_end"]) for r in runs),
                **{a: sum(a in r["alarms"] for r in runs) for a in ALARMS},
                **{a + "_at_end": sum(a in r["alarms_at_end"] for r in runs) for a in ALARMS},
            }
    # The same runs by how much of the data they cover, in quarters of K: the collapse alarm
    # should fire on the runs in the lowest quarter and stay quiet in the highest.
    alarm_by_modes = []
    for q in range(4):
        low, high = q * args.modes // 4, (q + 1) * args.modes // 4 - 1 if q < 3 else args.modes
        runs = [r for v in variants for r in v["runs"]
                if isinstance(r.get("modes_covered"), int) and low <= r["modes_covered"] <= high]
        first = sorted(min(r["alarm_kimg"]["mode-collapse"]) for r in runs
                       if r["alarm_kimg"].get("mode-collapse"))
        alarm_by_modes.append({
            "modes_covered": [low, high],
            "runs": len(runs),
            "collapse_alarm": sum("mode-collapse" in r["alarms"] for r in runs),
            "collapse_alarm_at_end": sum("mode-collapse" in r["alarms_at_end"] for r in runs),
            "first_alarm_kimg_median": first[len(first) // 2] if first else None,
        })
    result = {
        "bench": "remedies",
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "backend": args.backend,
        "modes": args.modes,
        "resolution": 16,
        "kimg": args.kimg,
        "parallel_runs": args.jobs,
        "wall_seconds": args.wall_seconds,
        "outcome_rule": "collapsed: modes covered < K/2; healthy: >= 3K/4; partial: between",
        "alarm_vs_outcome": alarm_vs_outcome,
        "alarm_by_modes": alarm_by_modes,
        "variants": variants,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    os.replace(tmp, args.out)

    print("| setup | role | modes covered (of %d) | KL to uniform | SWD ×1e3 | MS-SSIM gen | train s | alarms fired, runs (still at the final evaluation) | G grad norm, lowest / peak (range over seeds) |" % args.modes, file=sys.stderr)
    print("|---|---|---|---|---|---|---|---|---|", file=sys.stderr)
    for v in variants:
        if not v["runs"]:
            print(f"| {v['variant']} | {v['role']} | every run failed: {(v['failed_runs'] or [{'error': 'no runs'}])[0]['error'][:120]!r} |",
                  file=sys.stderr)
            continue
        failed = f" ({len(v['failed_runs'])} runs failed)" if v["failed_runs"] else ""
        alarms = ", ".join(
            f"{a} {n}/{len(v['runs'])} ({v['alarms_fired_at_end'].get(a, 0)})"
            for a, n in v["alarms_fired"].items()
        ) or "none"
        print(
            f"| {v['variant']}{failed} | {v['role']} | {fmt(v['modes_covered'], 1)} | {fmt(v['kl_to_uniform'], 2)} "
            f"| {fmt(v['swd_x1e3'], 0)} | {fmt(v['msssim_fake'], 3)} | {fmt(v['train_seconds'], 0)} | {alarms} "
            f"| {'—' if v['g_norm_min_ratio_range'] is None else '{:.0e}–{:.0e}'.format(*v['g_norm_min_ratio_range'])} |",
            file=sys.stderr,
        )
    print(file=sys.stderr)
    print("| outcome (final mode count) | runs | any alarm (still at the final evaluation) | "
          + " | ".join(ALARMS) + " |", file=sys.stderr)
    print("|---|---|---|" + "---|" * len(ALARMS), file=sys.stderr)
    for kind, row in alarm_vs_outcome.items():
        cells = " | ".join(f"{row[a]} ({row[a + '_at_end']})" for a in ALARMS)
        print(f"| {kind} | {row['runs']} | {row['any_alarm']} ({row['any_alarm_at_end']}) | {cells} |",
              file=sys.stderr)
    print(file=sys.stderr)
    print("| modes covered (of %d) | runs | collapse alarm fired | still at the final evaluation | first alarm, median kimg |" % args.modes, file=sys.stderr)
    print("|---|---|---|---|---|", file=sys.stderr)
    for row in alarm_by_modes:
        low, high = row["modes_covered"]
        first = row["first_alarm_kimg_median"]
        print(f"| {low}–{high} | {row['runs']} | {row['collapse_alarm']} | {row['collapse_alarm_at_end']} "
              f"| {'—' if first is None else first} |", file=sys.stderr)


if __name__ == "__main__":
    main()
