#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""Markdown report and plots from bench/run's TSV rows (issue 17).

Usage: report.py ROWS.tsv OUT.md PNG_PREFIX HEADER.txt

ROWS.tsv holds the rows every scenario wrote (format: top of bench/run):
  scenario server metric median min max unit [x]
For each scenario, one table: a row per metric (and x), a column per
server with "median (min-max)", then ringprot / peer for each peer. Then
two plots with gnuplot (PNG_PREFIX-mem.png, PNG_PREFIX-push.png) if the
rows for them are there, and the issue 17 targets: met, or by how much
missed. HEADER.txt (machine, commit, commands) goes on top.
"""

import os
import subprocess
import sys
from collections import OrderedDict

rows_f, out_f, png_prefix, header_f = sys.argv[1:5]

rows = []
for line in open(rows_f):
    if not line.strip() or line.startswith("#"):
        continue
    f = line.rstrip("\n").split("\t")
    if len(f) < 7:
        continue
    try:
        med, lo, hi = float(f[3]), float(f[4]), float(f[5])
    except ValueError:
        continue
    x = f[7] if len(f) > 7 else ""
    rows.append(dict(scen=f[0], server=f[1], metric=f[2], med=med, lo=lo,
                     hi=hi, unit=f[6], x=x))

# Rows with one key are repeated runs (bench-tls, TLS_RUNS times): their
# median, and the min and max over all of them.
groups = OrderedDict()
for r in rows:
    groups.setdefault((r["scen"], r["metric"], r["x"], r["server"]),
                      []).append(r)
by = OrderedDict()
for k, rs in groups.items():
    meds = sorted(r["med"] for r in rs)
    n = len(meds)
    med = meds[n // 2] if n % 2 else (meds[n // 2 - 1] + meds[n // 2]) / 2
    by[k] = dict(rs[-1], med=med, lo=min(r["lo"] for r in rs),
                 hi=max(r["hi"] for r in rs))


def get(scen, metric, server, x=""):
    r = by.get((scen, metric, str(x), server))
    return r["med"] if r else None


def fmt(v):
    if v is None:
        return "n/a"
    a = abs(v)
    if a >= 1000:
        return "%.0f" % v
    if a >= 100:
        return "%.1f" % v
    if a >= 1:
        return "%.2f" % v
    return "%.3g" % v


def cell(r):
    if r is None:
        return ""
    if r["lo"] == r["hi"]:
        return fmt(r["med"])
    return "%s (%s-%s)" % (fmt(r["med"]), fmt(r["lo"]), fmt(r["hi"]))


out = []
out.append(open(header_f).read().rstrip("\n"))
out.append("")

# Targets first: the reader's question is "where do we stand".
targets = []


def target(name, value, limit, unit, better, note=""):
    """better: 'le' (value <= limit is met) or 'ge'."""
    if value is None:
        targets.append("| %s | not measured | %s %s | - | %s |" % (
            name, "<=" if better == "le" else ">=", fmt(limit), note))
        return
    met = value <= limit if better == "le" else value >= limit
    if met:
        verdict = "met"
    elif better == "le":
        verdict = "missed by %s %s (%.1fx the target)" % (
            fmt(value - limit), unit, value / limit)
    else:
        verdict = "missed by %s %s (%.0f%% of the target)" % (
            fmt(limit - value), unit, 100.0 * value / limit)
    targets.append("| %s | %s %s | %s %s %s | %s | %s |" % (
        name, fmt(value), unit, "<=" if better == "le" else ">=", fmt(limit),
        unit, verdict, note))


noop = get("imap-noop", "cpu_us_per_op", "ringprot")
noop_dc = get("imap-noop", "cpu_us_per_op", "dovecot")
noop_fl = get("imap-noop", "cpu_us_per_op", "floor")
srv_pct = get("imap-noop", "server_cpu_pct", "ringprot")
cli_pct = get("imap-noop", "client_cpu_pct", "ringprot")
# The floor (bench/noop-floor: epoll, read and write, no IMAP state) is
# what the kernel alone costs per round trip: the target's scale.
note = "Dovecot here: %s us" % fmt(noop_dc)
if noop_fl:
    note += "; the epoll floor here: %s us (ringprot / floor %.2fx)" % (
        fmt(noop_fl), noop / noop_fl if noop else float("nan"))
target("NOOP server CPU per command (ringprot)", noop, 5, "us", "le", note)
if noop and noop_dc:
    target("NOOP CPU, Dovecot / ringprot", noop_dc / noop, 13, "x", "ge")
oth_pct = get("imap-noop", "other_cpu_pct", "ringprot")
if srv_pct is not None:
    lim = "client" if srv_pct < 90 and (cli_pct or 0) >= 90 else \
        "server" if srv_pct >= 90 else \
        "neither saturated: other load on the machine (%s%% of a CPU) " \
        "limited both" % fmt(oth_pct)
    targets.append("| NOOP throughput limited by the client | server %s%%, "
                   "client %s%% of a CPU | client | %s | |" % (
                       fmt(srv_pct), fmt(cli_pct),
                       "met" if lim == "client" else "not met: " + lim))
# The anchors (issue 17): Dovecot 20.7k NOOPs/s at 66 us, Cyrus 8.9k/s
# at 177 us, with a Python client at 16 connections: our noop-py runs.
for srv, ops, us in (("dovecot", 20700, 66), ("cyrus", 8900, 177)):
    o = get("imap-noop-py", "ops_per_s", srv)
    u = get("imap-noop-py", "cpu_us_per_op", srv)
    if o is not None:
        targets.append("| anchor check: %s, Python client | %s ops/s, %s us/op "
                       "| anchor %d ops/s, %d us/op | (calibration, not a target) | |"
                       % (srv, fmt(o), fmt(u), ops, us))
py = get("imap-noop-py", "cpu_us_per_op", "ringprot")
if py is not None:
    target("NOOP server CPU per command, Python client (ringprot)", py, 5,
           "us", "le", "below saturation: less batching per wake-up")
# The anchors' own client: does the Python client or the server limit?
py_srv = get("imap-noop-py", "server_cpu_pct", "ringprot")
py_cli = get("imap-noop-py", "client_cpu_pct", "ringprot")
if py_srv is not None:
    met = py_srv < 90 and (py_cli or 0) >= 90
    targets.append("| NOOP throughput limited by the client, Python client "
                   "(the anchors') | server %s%%, client %s%% of a CPU | "
                   "client | %s | %s NOOPs/s |" % (
                       fmt(py_srv), fmt(py_cli),
                       "met" if met else "not met",
                       fmt(get("imap-noop-py", "ops_per_s", "ringprot"))))
# IDLE memory at 10,000 sessions (or the largest N measured, said so).
mem_ns = sorted(int(k[2]) for k in by if k[0] == "imap-idle-mem" and
                k[1] == "pss_kib_per_conn" and k[3] == "ringprot" and k[2])
if 10000 in mem_ns:
    target("IDLE memory per session at 10,000 (ringprot, PSS)",
           get("imap-idle-mem", "pss_kib_per_conn", "ringprot", 10000), 4,
           "KiB", "le")
elif mem_ns:
    target("IDLE memory per session at 10,000 (ringprot, PSS)",
           get("imap-idle-mem", "pss_kib_per_conn", "ringprot", mem_ns[-1]),
           4, "KiB", "le", "measured at %d sessions only" % mem_ns[-1])
else:
    target("IDLE memory per session at 10,000 (ringprot, PSS)", None, 4,
           "KiB", "le")
target("IDLE push delay p50 (ringprot)",
       get("imap-push", "delay_ms", "ringprot", 50), 2, "ms", "le")
# The target is about large messages (imap-fetch.sh: zero copy against
# Dovecot's sendfile); the FETCH mix of imap-cmds.sh when that did not run.
f_sc = "imap-fetch-large" if get("imap-fetch-large", "cpu_ms_per_mib",
                                 "dovecot") else "imap-fetch"
f_r = get(f_sc, "cpu_ms_per_mib", "ringprot")
f_d = get(f_sc, "cpu_ms_per_mib", "dovecot")
target("FETCH server CPU per MiB (%s), ringprot / Dovecot" % f_sc,
       f_r / f_d if f_r and f_d else None, 0.3, "x", "le",
       "ringprot %s ms/MiB, Dovecot %s ms/MiB" % (fmt(f_r), fmt(f_d)))
tls = [k for k in by if "bulk" in k[0].lower() and "tls" in k[0].lower() and
       k[1] == "rate" and k[3] == "ringprot"]
t_r = get(tls[0][0], "rate", "ringprot") if tls else None
t_p = get(tls[0][0], "rate", "peer") if tls else None
target("TLS bulk throughput, ringprot / OpenSSL",
       t_r / t_p if t_r and t_p else None, 0.9, "x", "ge",
       tls[0][0] if tls else "bench-tls not run or its output not understood")

out.append("## Issue 17 targets")
out.append("")
busy = [r["med"] for k, r in by.items() if k[1] == "other_cpu_pct"]
if busy and max(busy) > 20:
    out.append("Caution: the machine was busy outside the processes measured "
               "(other CPU, median per scenario and server, up to %s%% of a "
               "CPU; see other_cpu_pct below): rates are depressed, and CPU "
               "per command is inflated where a server batches less at a "
               "lower rate. Compare servers within this run, not with "
               "figures from another." % fmt(max(busy)))
    out.append("")
out.append("| target | measured | goal | verdict | note |")
out.append("|---|---|---|---|---|")
out.extend(targets)
out.append("")

# One table per scenario.
scens = OrderedDict()
for r in rows:
    scens.setdefault(r["scen"], None)
for scen in scens:
    rs = [r for r in by.values() if r["scen"] == scen]
    servers = list(OrderedDict((r["server"], None) for r in rs))
    if "ringprot" in servers:
        servers.remove("ringprot")
        servers.insert(0, "ringprot")
    peers = [s for s in servers if s != "ringprot"] if "ringprot" in servers else []
    keys = list(OrderedDict(((r["metric"], r["x"], r["unit"]), None) for r in rs))
    out.append("## %s" % scen)
    out.append("")
    out.append("Median (min-max) over the runs.")
    out.append("")
    hdr = ["metric", "unit"] + servers + ["ringprot / %s" % p for p in peers]
    out.append("| " + " | ".join(hdr) + " |")
    out.append("|" + "---|" * len(hdr))
    for metric, x, unit in keys:
        name = metric if x == "" else "%s @ %s" % (metric, x)
        cells = [name, unit]
        for s in servers:
            cells.append(cell(by.get((scen, metric, x, s))))
        for p in peers:
            a = by.get((scen, metric, x, "ringprot"))
            b = by.get((scen, metric, x, p))
            cells.append("%.3gx" % (a["med"] / b["med"])
                         if a and b and b["med"] else "")
        out.append("| " + " | ".join(cells) + " |")
    out.append("")


def plot(name, title, xlabel, ylabel, series, logx=False, logy=False):
    """series: {server: [(x, y), ...]}. Returns the PNG's file name."""
    if not series:
        return None
    if logy:
        # A log axis has no place for 0 or negatives (a push that came
        # before the LMTP reply): left out, and said so.
        kept = OrderedDict((s, [p for p in pts if p[1] > 0])
                           for s, pts in series.items())
        dropped = sum(len(series[s]) - len(kept[s]) for s in series)
        if dropped:
            out.append("(%s plot: %d points at or below 0 left out of the "
                       "log axis)" % (name, dropped))
        series = OrderedDict((s, p) for s, p in kept.items() if p)
        if not series:
            return None
    png = "%s-%s.png" % (png_prefix, name)
    dat = "%s-%s.dat" % (png_prefix, name)
    with open(dat, "w") as d:
        for s, pts in series.items():
            d.write("# %s\n" % s)
            for x, y in sorted(pts):
                d.write("%g %g\n" % (x, y))
            d.write("\n\n")
    cmds = ["set terminal pngcairo size 800,500" if has_cairo else
            "set terminal png size 800,500",
            "set output '%s'" % png, "set title '%s'" % title,
            "set xlabel '%s'" % xlabel, "set ylabel '%s'" % ylabel,
            "set key outside right", "set grid"]
    xs = [x for pts in series.values() for x, _ in pts]
    if logx:
        cmds.append("set logscale x")
        cmds.append("set xrange [%g:%g]" % (min(xs) / 2, max(xs) * 2))
    else:
        pad = (max(xs) - min(xs)) * 0.05 or 1
        cmds.append("set xrange [%g:%g]" % (min(xs) - pad, max(xs) + pad))
    if logy:
        cmds.append("set logscale y")
    plots = ["'%s' index %d with linespoints title '%s'" % (dat, i, s)
             for i, s in enumerate(series)]
    cmds.append("plot " + ", ".join(plots))
    r = subprocess.run(["gnuplot"], input="\n".join(cmds) + "\n", text=True,
                       capture_output=True)
    os.unlink(dat)
    if r.returncode != 0 or not os.path.exists(png):
        out.append("(plot %s failed: %s)" % (name, r.stderr.strip()[:200]))
        return None
    return png


has_cairo = False
try:
    r = subprocess.run(["gnuplot", "-e", "set terminal"], capture_output=True,
                       text=True)
    has_cairo = "pngcairo" in r.stdout + r.stderr
    gnuplot = True
except OSError:
    gnuplot = False

out.append("## Plots")
out.append("")
if not gnuplot:
    out.append("No gnuplot: no plots.")
else:
    mem = OrderedDict()
    for k, r in by.items():
        if k[0] == "imap-idle-mem" and k[1] == "pss_kib_per_conn" and k[2]:
            mem.setdefault(k[3], []).append((float(k[2]), r["med"]))
    png = plot("mem", "Server memory per IDLE session (PSS)",
               "sessions in IDLE", "KiB per session", mem, logx=True,
               logy=True)
    if png:
        out.append("![memory per connection](%s)" % os.path.basename(png))
        out.append("")
    push = OrderedDict()
    for k, r in by.items():
        if k[0] == "imap-push" and k[1] == "delay_ms" and k[2]:
            push.setdefault(k[3], []).append((float(k[2]), r["med"]))
    png = plot("push", "IDLE notification delay (LMTP 250 to * EXISTS)",
               "percentile", "ms", push, logy=True)
    if png:
        out.append("![notification delay percentiles](%s)" %
                   os.path.basename(png))
        out.append("")
    if not mem and not push:
        out.append("No imap-idle rows: no plots.")

open(out_f, "w").write("\n".join(out) + "\n")
