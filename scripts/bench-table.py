#!/usr/bin/env python3
"""Markdown table of the cron benchmark (crates/rota/benches/cron.rs).

Reads criterion's target/criterion/**/new/{benchmark,estimates}.json for the
groups parse/<label>, next/<label> and iter10k/<label>, and prints:

1. one row per expression x measurement, one column per crate, with the
   median time per operation (ns for parse and next, microseconds for a whole
   iteration run);
2. a verdict per expression: rota against croner and cron (faster or not,
   with the ratio), within 1.5x of saffron, and parse under 1 microsecond.

Usage: python3 scripts/bench-table.py [CRITERION_DIR]
(default: $CARGO_TARGET_DIR/criterion, else target/criterion at the repo root).
Python 3 standard library only.
"""

import json
import os
import sys
from pathlib import Path

MEASUREMENTS = ["parse", "next", "iter10k"]
COLUMNS = ["rota", "rota_ny", "croner", "cron", "saffron"]
# Shown after the main columns when present (next/*: rota's Timestamp core API).
EXTRA_COLUMNS = ["rota_ts"]
# Expression order of the bench; labels not listed follow, sorted.
LABEL_ORDER = [
    "every_minute",
    "every_15s",
    "daily_0200",
    "feb29",
    "last_dom",
    "last_fri",
    "mon_2nd",
    "list_step",
]
EXPRESSIONS = {
    "every_minute": "0 * * * * *",
    "every_15s": "*/15 * * * * *",
    "daily_0200": "0 0 2 * * *",
    "feb29": "0 0 12 29 2 *",
    "last_dom": "0 0 12 L * *",
    "last_fri": "0 0 12 ? * FRIL",
    "mon_2nd": "0 0 12 ? * MON#2",
    "list_step": "0 5,10,15,20 8-18/2 * * MON-FRI",
}
SAFFRON_SLACK = 1.5
PARSE_LIMIT_NS = 1000.0


def default_dir() -> Path:
    target = os.environ.get("CARGO_TARGET_DIR")
    if target:
        return Path(target) / "criterion"
    return Path(__file__).resolve().parent.parent / "target" / "criterion"


def load(root: Path):
    """{(measurement, label): {function: (median_ns, elements or None)}}"""
    data = {}
    for est in root.glob("**/new/estimates.json"):
        meta_path = est.with_name("benchmark.json")
        if not meta_path.exists():
            continue
        meta = json.loads(meta_path.read_text())
        group = meta.get("group_id", "")
        func = meta.get("function_id")
        if "/" not in group or func is None:
            continue
        measurement, label = group.split("/", 1)
        if measurement not in MEASUREMENTS:
            continue
        median = json.loads(est.read_text())["median"]["point_estimate"]
        throughput = meta.get("throughput") or {}
        elements = throughput.get("Elements") if isinstance(throughput, dict) else None
        data.setdefault((measurement, label), {})[func] = (median, elements)
    return data


def fmt_cell(measurement: str, ns) -> str:
    if ns is None:
        return "n/a"
    if measurement == "iter10k":
        us = ns / 1000.0
        return f"{us:,.0f} µs" if us >= 100 else f"{us:,.1f} µs"
    return f"{ns:,.0f} ns" if ns >= 100 else f"{ns:,.1f} ns"


def ordered_labels(data):
    labels = {label for (_, label) in data}
    known = [l for l in LABEL_ORDER if l in labels]
    return known + sorted(labels - set(LABEL_ORDER))


def ratio_word(rota, other):
    """'yes (0.42x)' when rota is faster, 'no (1.30x)' otherwise; rota time / other time."""
    if rota is None or other is None:
        return "n/a"
    r = rota / other
    return f"{'yes' if r < 1 else 'no'} ({r:.2f}x)"


def main() -> int:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else default_dir()
    if not root.is_dir():
        print(f"no criterion results in {root}; run: cargo bench -p rota --bench cron", file=sys.stderr)
        return 1
    data = load(root)
    if not data:
        print(f"no parse/next/iter10k groups under {root}", file=sys.stderr)
        return 1

    present_extra = [c for c in EXTRA_COLUMNS if any(c in funcs for funcs in data.values())]
    columns = COLUMNS + present_extra
    labels = ordered_labels(data)

    print("Median time per operation (criterion `new` estimates). parse and next: ns per call;")
    print("iter: µs for the whole run of n successive fires. n/a: not measured (crate lacks the feature).")
    print()
    print("| expression | measurement | " + " | ".join(columns) + " |")
    print("|---|---|" + "---:|" * len(columns))
    for label in labels:
        expr = EXPRESSIONS.get(label)
        name = f"{label} `{expr}`" if expr else label
        for m in MEASUREMENTS:
            funcs = data.get((m, label))
            if not funcs:
                continue
            mname = m
            if m == "iter10k":
                ns = {e for (_, e) in funcs.values() if e}
                if len(ns) == 1:
                    mname = f"iter n={ns.pop():,}"
            cells = [fmt_cell(m, funcs[c][0]) if c in funcs else "n/a" for c in columns]
            print(f"| {name} | {mname} | " + " | ".join(cells) + " |")

    print()
    print("Verdict: rota (UTC) time / other time; 'yes' = rota faster. "
          f"saffron: rota within {SAFFRON_SLACK}x of saffron's time.")
    print()
    print("| expression | measurement | beats croner | beats cron | within 1.5x of saffron | parse < 1 µs |")
    print("|---|---|---|---|---|---|")
    for label in labels:
        parse = data.get(("parse", label), {})
        rota_parse = parse.get("rota", (None, None))[0]
        parse_ok = "n/a" if rota_parse is None else (
            f"{'yes' if rota_parse < PARSE_LIMIT_NS else 'no'} ({fmt_cell('parse', rota_parse)})")
        for m in MEASUREMENTS:
            funcs = data.get((m, label))
            if not funcs:
                continue
            get = lambda f: funcs.get(f, (None, None))[0]  # noqa: E731
            rota = get("rota")
            saffron = get("saffron")
            if rota is None or saffron is None:
                within = "n/a"
            else:
                within = f"{'yes' if rota <= SAFFRON_SLACK * saffron else 'no'} ({rota / saffron:.2f}x)"
            print(f"| {label} | {m} | {ratio_word(rota, get('croner'))} | "
                  f"{ratio_word(rota, get('cron'))} | {within} | {parse_ok if m == 'parse' else ''} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
