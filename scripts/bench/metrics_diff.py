#!/usr/bin/env python3
"""What happened between two scrapes of /metrics: the writer's groups and
each projection's lag (from ledgerdesk_projection_lag_seconds), as the
benchmarks print them. Usage: metrics_diff.py BEFORE AFTER"""
import re
import sys
from collections import defaultdict

LINE = re.compile(r'^([a-z_]+)(?:\{([^}]*)\})?\s+(\S+)$')


def parse(path):
    values = {}
    for line in open(path, encoding="utf-8"):
        m = LINE.match(line.strip())
        if not m:
            continue
        name, labels, value = m.groups()
        labels = tuple(sorted(re.findall(r'(\w+)="([^"]*)"', labels or "")))
        values[(name, labels)] = float(value)
    return values


def delta(before, after):
    return {k: v - before.get(k, 0.0) for k, v in after.items()}


def quantile(buckets, q):
    """Upper bound of the bucket holding quantile q, from cumulative counts."""
    total = buckets[-1][1] if buckets else 0
    if total <= 0:
        return None
    for bound, cumulative in buckets:
        if cumulative >= q * total:
            return bound
    return float("inf")


def fmt(seconds):
    if seconds is None:
        return "-"
    if seconds == float("inf"):
        return "> last bound"
    return f"≤ {seconds * 1000:g} ms"


def main(before_path, after_path):
    d = delta(parse(before_path), parse(after_path))
    groups = d.get(("ledgerdesk_writer_group_appends_count", ()), 0)
    if groups:
        appends = d.get(("ledgerdesk_writer_group_appends_sum", ()), 0)
        commit = d.get(("ledgerdesk_writer_commit_seconds_sum", ()), 0)
        print(f"writer: {groups:.0f} groups, {appends / groups:.1f} appends per group, "
              f"{commit / groups * 1000:.2f} ms from lock to commit on average")
    lags = defaultdict(list)
    counts = {}
    for (name, labels), value in d.items():
        labels = dict(labels)
        if name == "ledgerdesk_projection_lag_seconds_bucket" and labels.get("le") != "+Inf":
            lags[labels["projection"]].append((float(labels["le"]), value))
        elif name == "ledgerdesk_projection_lag_seconds_count":
            counts[labels["projection"]] = value
    for projection in sorted(lags):
        buckets = sorted(lags[projection])
        total = counts.get(projection, 0)
        buckets.append((float("inf"), total))
        print(f"projection lag, {projection}: {total:.0f} events, "
              f"p50 {fmt(quantile(buckets, 0.5))}, p99 {fmt(quantile(buckets, 0.99))}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
