#!/usr/bin/env python3
"""troupe at cluster level: discovery, broadcast, configure and stats figures (not tests).

Run through `bench/run mesh` (as root, with the venv's python: stdlib + pyzmq only). Reuses
bench/compare.py's client and helpers.

Nothing here runs in the root network namespace. The outer part creates, and finally deletes:
  <tag>-m   lo (127.0.0.0/8, multicast on, route 224.0.0.0/4 dev lo: circusd joins a group)
            and a veth pair whose both ends stay inside, v0 = 10.78.0.1/24 (the /24 probe)
  <tag>-d   lo only: mDNS on lo
  <tag>-br  a bridge (multicast snooping off) joining <tag>-h1 (10.78.1.1) and <tag>-h2
            (10.78.1.2): mDNS between two "hosts"
and runs the inner part once per phase inside one of them (`ip netns exec NS python mesh.py
--inner PHASE ...`): `mdns-lo` in <tag>-d, `mdns-bridge` in <tag>-h2 (the agent is started in
<tag>-h1), `main` in <tag>-m (probing, membership, broadcast, configure, etcd, stats, circusd).
Whatever happens, the outer part kills every process left in its namespaces and deletes them.
Agents get `mdns = false` and serves `--no-mdns` except in the two mDNS phases; each serve
probes only the loopback addresses of its own agents (127.0.x.y inside <tag>-m) or the /24
that exists only in <tag>-m.

`--agents N` runs one phase only, `scale` in <tag>-m: a serve probing 127.1.x.y, then FLEET
agents there (a watcher running `sleep`, three not started), measured; then svc raised to
SCALE_PROCS processes on every agent: serve aggregating their stats, then with one `troupe top`
(in a tmux terminal), then its web dashboard in headless chromium (bench/webdriver.py:
chromedriver and chromium run in the namespace too); then the same with N agents; printed side
by side (report_scale()). The serve starts with a soft open-files limit of
at most 1024, as from a login shell, so what it raises itself is what is measured.

Figures (see report() for the exact list):
  discovery   agent start -> `alive` at a running serve: mDNS (lo only; two hosts on a bridge)
              and probing (probe_interval 5 s = default, and 1 s); SIGKILL -> `down` (nodelist
              polled every 20 ms, and the node.<name>.down event); `troupe nodes --probe
              10.78.0.0/24 --wait 0s`; a serve with 200 agents: time to 200 alive, CPU and RSS
              at steady state
  broadcast   `troupe status --controller` to 32 and 128 agents (p50/p99 of 20 runs, wall time
              of the CLI process); one agent SIGSTOPped: total with --timeout 1s
  configure   `troupe reconfigure` -> 3 healthy etcd members; `troupe configure` to 100 agents
  fan-out     (`--fanout N` only: that phase alone, in <tag>-m) N agents on 127.1.x.y: `troupe
              status` and `troupe configure` to all N, straight from the CLI (--probe) and
              through a serve (--controller): p50/p99 of the CLI's wall time
  stats       troupe-agent sampling 1000 processes at 1 Hz (CPU over 20 s minus idle);
              circusd-stats (and circusd) on 1000 processes; serve aggregating 32 x 50 processes
"""

import argparse
import json
import os
import random
import re
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import mesh_swarm  # noqa: E402  (`--simulated N`: bench/mesh_swarm.py)
import webdriver  # noqa: E402  (bench/webdriver.py: the dashboard in headless chromium)
from compare import (  # noqa: E402  (bench/compare.py: same directory)
    CallError,
    Client,
    kill_namespace_except_self,
    netns_pids,
    own_netns,
    percentile,
    stop_inner,
    rss_kb,
    source_state,
)

CLK_TCK = os.sysconf("SC_CLK_TCK")
PHASE_TIMEOUTS = {"mdns-lo": 90, "mdns-bridge": 90, "main": 560, "simulated": 900,
                  "scale": 2400, "fanout": 900}

# Targets from the issue.
TARGET_DOWN_S = 3.0
TARGET_PROBE24_S = 1.0
TARGET_STATUS128_P50_MS = 50.0
TARGET_BLACKHOLE_EXTRA_MS = 50.0
TARGET_SAMPLING_CPU = 1.0  # % of one core

FLEET = 200
# `--fanout N`: fan-outs to N agents (issue 15's targets are for 1000).
FANOUT_RUNS = 10
TARGET_FANOUT_STATUS_P50_MS = 150.0
TARGET_FANOUT_CONFIGURE_S = 2.0
STATUS_RUNS = 20
STATUS_WARMUP = 2
BLACKHOLE_RUNS = 3
CONFIGURE_RUNS = 10
ETCD_RUNS = 3
STATS_PROCS = 1000
STATS_WINDOW_S = 20.0
IDLE_WINDOW_S = 10.0
SERVE_WINDOW_S = 10.0
SUB_WINDOW_S = 10.0
LOAD_PROCS = 50
LOAD_NODES = 32

# `--agents N`: one serve with FLEET agents, then with N, side by side (targets from issue 15).
TARGET_SCALE_ALIVE_S = 10.0
TARGET_SCALE_SERVE_CPU = 20.0  # % of one core, at 1000 members
TARGET_SCALE_SERVE_RSS_MB = 150.0
TARGET_SCALE_STATUS_P50_MS = 150.0
TARGET_SCALE_CONFIGURE_S = 2.0
SCALE_KILLED = 50
SCALE_SETTLE_S = 5.0
SCALE_STATUS_RUNS = 10
SCALE_CONFIGURE_RUNS = 3
SCALE_PROCS = 10  # svc's processes per agent while stats, top and the dashboard are measured
# Stock libzmq's memory per connection (troupe's has smaller buffers, vendor/zeromq-src): connections
# opened from a separate pyzmq process, and round trips on each.
ZMQ_FLOOR_CONNECTIONS = 200
ZMQ_FLOOR_ROUND_TRIPS = 600
# Connections serve holds per member: heartbeat (control), stats and events subscriptions.
SERVE_CONNECTIONS_PER_MEMBER = 3
DASH_EVENT_RUNS = 3  # stop + start of one watcher, each until the page shows it

# Runs in the dashboard page before its own scripts (bench/webdriver.py's on_new_document):
# `first`/`full`: performance.now() (ms since navigation start) when the node table first has
# rows / has WANT alive rows; `seen`: Date.now() when the element `watch.css` first has
# `dataset[watch.key] === watch.value` (set by the bench before each action); `longtasks`: the
# durations of the main thread's tasks over 50 ms.
DASHBOARD_OBSERVER_JS = """
window.__bench = {first: null, full: null, rows: 0, watch: null, seen: null, longtasks: []};
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) window.__bench.longtasks.push(e.duration);
}).observe({type: 'longtask'});
new MutationObserver(() => {
  const b = window.__bench;
  if (b.full === null) {
    b.rows = document.querySelectorAll('#members tbody tr[data-state="alive"]').length;
    if (b.rows > 0 && b.first === null) b.first = performance.now();
    if (b.rows >= WANT) b.full = performance.now();
  }
  if (b.watch && b.seen === null) {
    const el = document.querySelector(b.watch.css);
    if (el && el.dataset[b.watch.key] === b.watch.value) b.seen = Date.now();
  }
}).observe(document, {childList: true, subtree: true});
"""
# The page's own functions, timed from then on: {name: [ms, calls]} (app.js is a classic
# script: its top-level functions are globals, looked up at each call). renderMembers includes
# renderMatrix.
DASHBOARD_TIMERS_JS = """
window.__bench.js = {};
for (const name of ['renderMembers', 'renderMatrix', 'setBusy', 'fillLogChoices', 'mergeLines', 'renderCharts']) {
  const original = window[name];
  if (typeof original !== 'function') continue;
  window.__bench.js[name] = [0, 0];
  window[name] = function (...args) {
    const t = performance.now();
    try { return original.apply(this, args); } finally {
      window.__bench.js[name][0] += performance.now() - t;
      window.__bench.js[name][1] += 1;
    }
  };
}
return true;
"""


def log(msg):
    print(f"[mesh {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def loadavg():
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "?"


class Terminated(Exception):
    pass


# --------------------------------------------------------------------------------------------
# Outer part: root namespace. Creates the namespaces, runs each phase in one, cleans up.
# --------------------------------------------------------------------------------------------


def ip(*args):
    out = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=15)
    if out.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {out.stderr.strip()}")


def outer(args):
    if os.geteuid() != 0:
        sys.exit("mesh.py: needs root (it creates network namespaces)")
    needed = (args.troupe, args.swarm) if args.simulated else (
        args.agent, args.troupe, args.circusd, "/usr/bin/etcd", "/usr/bin/etcdctl")
    for path in needed:
        if not os.access(path, os.X_OK):
            sys.exit(f"mesh.py: {path} is missing or not executable")
    if args.simulated is not None and not 1 <= args.simulated <= 65536:
        sys.exit(f"mesh.py: --simulated: expected 1 to 65536 agents, got {args.simulated}")
    tag = f"trm{os.getpid()}"
    ns_m, ns_d, ns_br, ns_h1, ns_h2 = (f"{tag}-{s}" for s in ("m", "d", "br", "h1", "h2"))

    def on_term(signum, frame):
        raise Terminated()

    signal.signal(signal.SIGTERM, on_term)
    created = []
    inner_proc = None
    outdir = tempfile.mkdtemp(prefix="troupe-mesh-out-")
    results = {}
    started = time.monotonic()
    load_start = loadavg()
    try:
        def add(name):
            ip("netns", "add", name)
            created.append(name)
            ip("-n", name, "link", "set", "lo", "up")

        add(ns_m)
        ip("-n", ns_m, "link", "set", "lo", "multicast", "on")
        ip("-n", ns_m, "route", "add", "224.0.0.0/4", "dev", "lo")
        ip("-n", ns_m, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
        ip("-n", ns_m, "addr", "add", "10.78.0.1/24", "dev", "v0")
        ip("-n", ns_m, "link", "set", "v0", "up")
        ip("-n", ns_m, "link", "set", "v1", "up")
        add(ns_d)
        add(ns_br)
        ip("-n", ns_br, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
        ip("-n", ns_br, "link", "set", "br0", "up")
        for i, host in ((1, ns_h1), (2, ns_h2)):
            add(host)
            ip("-n", ns_br, "link", "add", f"v{i}", "type", "veth", "peer", "name", "eth0", "netns", host)
            ip("-n", ns_br, "link", "set", f"v{i}", "master", "br0", "up")
            ip("-n", host, "addr", "add", f"10.78.1.{i}/24", "dev", "eth0")
            ip("-n", host, "link", "set", "eth0", "up")
            ip("-n", host, "route", "add", "224.0.0.0/4", "dev", "eth0")
        log(f"namespaces {', '.join(created)} created")

        if args.simulated:
            phases = (("simulated", ns_m, ["--simulated", str(args.simulated), "--swarm",
                                           os.path.abspath(args.swarm)]),)
        elif args.agents:
            phases = (("scale", ns_m, ["--agents", str(args.agents)]),)
        elif args.fanout:
            phases = (("fanout", ns_m, ["--fanout", str(args.fanout)]),)
        else:
            phases = (
                ("mdns-lo", ns_d, []),
                ("mdns-bridge", ns_h2, ["--agent-netns", ns_h1]),
                ("main", ns_m, []),
            )
        for phase, ns, extra in phases:
            out = os.path.join(outdir, f"{phase}.json")
            cmd = [
                "ip", "netns", "exec", ns,
                sys.executable, "-u", os.path.abspath(__file__), "--inner", phase,
                "--outer-netns", own_netns(), "--out", out,
                "--agent", os.path.abspath(args.agent), "--troupe", os.path.abspath(args.troupe),
                "--circusd", os.path.abspath(args.circusd), *extra,
            ]
            log(f"phase {phase} in {ns}")
            inner_proc = subprocess.Popen(cmd)
            try:
                rc = inner_proc.wait(timeout=PHASE_TIMEOUTS[phase])
            except subprocess.TimeoutExpired:
                log(f"phase {phase} exceeded {PHASE_TIMEOUTS[phase]} s: stopping it")
                inner_proc.send_signal(signal.SIGINT)
                try:
                    inner_proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    inner_proc.kill()
                    inner_proc.wait(timeout=10)
                rc = f"stopped after {PHASE_TIMEOUTS[phase]} s"
            inner_proc = None
            try:
                with open(out) as f:
                    results[phase] = json.load(f)
            except (OSError, ValueError) as e:
                results[phase] = {"figures": {}, "failures": [
                    {"what": f"phase {phase}", "detail": f"no results ({e}); exit {rc}"}]}
            results[phase]["rc"] = rc
    except (KeyboardInterrupt, Terminated):
        log("interrupted: cleaning up")
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop_inner(inner_proc, grace=60)
        # Everything still in the namespaces was started by this run.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            pids = [p for ns in created for p in netns_pids(ns)]
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        for ns in created:
            left = netns_pids(ns)
            if left:
                log(f"warning: processes still in {ns}: {left}")
        for ns in reversed(created):
            subprocess.run(["ip", "netns", "del", ns], timeout=15)
        if created:
            log(f"namespaces {', '.join(created)} deleted")
    elapsed = time.monotonic() - started
    if args.agents:
        return report_scale(results, load_start, loadavg(), elapsed, outdir)
    return report(results, load_start, loadavg(), elapsed, outdir)


def fmt_s(values, digits=2):
    return ", ".join(f"{v:.{digits}f}" for v in values)


def report_failures(failures, outdir):
    """Prints each failure with its exact command and output and keeps `outdir`; without
    failures, removes it. The exit status of the run."""
    if failures:
        print()
        print("failures and oddities (exact command and output):")
        for f in failures:
            print(f"  [{f.get('phase')}] {f.get('what')}:")
            for line in str(f.get("detail", "")).splitlines():
                print(f"      {line}")
        print(f"\nper-phase results and logs kept in {outdir} (and the workdirs named there)")
        return 1
    shutil.rmtree(outdir, ignore_errors=True)
    return 0


def report_scale(results, load_start, load_end, elapsed, outdir):
    """`--agents N`: the FLEET-agent and N-agent runs side by side."""
    r = results.get("scale", {})
    runs = r.get("figures", {}).get("scale", {})
    failures = [dict(f, phase="scale") for f in r.get("failures", [])]
    if r.get("rc") not in (0, None) and not failures:
        failures.append({"phase": "scale", "what": "phase exit", "detail": f"exit {r.get('rc')}"})
    sizes = sorted(runs, key=int)
    largest = sizes[-1] if sizes else None

    def cell(n, fn):
        try:
            return fn(runs[n])
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            return "n/a"

    def ms_p50_p99(v):
        return f"{statistics.median(v):.0f} / {percentile(v, 99):.0f} ms"

    rows = [
        ("agents started (spawn wall time)", None,
         lambda f: f"{f['started']} ({f['spawn_s']:.1f} s)"),
        ("last agent started -> all alive at serve", f"<= {TARGET_SCALE_ALIVE_S:g} s",
         lambda f: f"{f['alive_after_last_s']:.2f} s"),
        ("  floor: last agent started -> it answers nodeinfo", None,
         lambda f: f"{f['last_answers_s']:.2f} s"),
        ("members alive / flaps (down events) during settle + measure", None,
         lambda f: f"{f['alive_end']} / {f['down_events']}"),
        (f"serve CPU, steady, over {SERVE_WINDOW_S:g} s", f"<= {TARGET_SCALE_SERVE_CPU:g} % at 1000",
         lambda f: f"{f['serve_cpu']:.1f} % of a core"),
        ("  per member", None, lambda f: f"{f['serve_cpu'] / f['started'] * 1000:.1f} % per 1000"),
        ("  floor: the agents' CPU together (answering heartbeats)", None,
         lambda f: f"{f['agents_cpu']:.1f} % ({f['agents_cpu'] / f['started'] * 1000:.1f} % per 1000)"),
        ("serve RSS (VmRSS / VmHWM)", f"<= {TARGET_SCALE_SERVE_RSS_MB:g} MiB",
         lambda f: f"{f['serve_rss_mb']:.1f} / {f['serve_hwm_mb']:.1f} MiB"),
        ("  per member", None, lambda f: f"{f['serve_rss_mb'] * 1024 / f['started']:.0f} KiB"),
        ("  for comparison: stock libzmq's memory a connection (pyzmq; connected / after "
         f"{ZMQ_FLOOR_ROUND_TRIPS} round trips), x {SERVE_CONNECTIONS_PER_MEMBER} a member", None,
         lambda f: "{:.0f} / {:.0f} KiB: {:.0f} / {:.0f} MiB".format(
             *f["zmq_kib_per_connection"],
             *(k * SERVE_CONNECTIONS_PER_MEMBER * f["started"] / 1024 for k in f["zmq_kib_per_connection"]))),
        ("  serve RSS at the end of the run (s after its start)", None,
         lambda f: f"{f['serve_rss_end_mb']:.1f} MiB ({f['serve_age_end_s']:.0f} s)"),
        ("serve fds / threads", None, lambda f: f"{f['serve_fds']} / {f['serve_threads']}"),
        (f"troupe status --controller to all, p50 / p99 ({SCALE_STATUS_RUNS} runs)",
         f"p50 <= {TARGET_SCALE_STATUS_P50_MS:g} ms", lambda f: ms_p50_p99(f["status_ms"])),
        ("  nodes not ok per run (max)", None, lambda f: f"{max(f['status_failed'])}"),
        ("  the same request straight to serve (pyzmq), p50 / p99", None,
         lambda f: ms_p50_p99(f["status_serve_ms"])),
        ("  floor: status to every agent at once, straight from pyzmq (no serve), p50 / p99", None,
         lambda f: ms_p50_p99(f["status_direct_ms"])),
        ("the same after the 10-process, top and dashboard phases: CLI / serve alone / floor, p50", None,
         lambda f: " / ".join(f"{statistics.median(f[k]):.0f}" for k in
                              ("status_after_ms", "status_after_serve_ms", "status_after_direct_ms")) + " ms"),
        (f"troupe configure --controller to all, p50 ({SCALE_CONFIGURE_RUNS} runs)",
         f"<= {TARGET_SCALE_CONFIGURE_S:g} s",
         lambda f: f"{statistics.median(f['configure_ms']):.0f} ms (first {f['configure_first_ms']:.0f})"),
        ("  floor: the agents' CPU taking one push (parse, render), over the cores, p50", None,
         lambda f: f"{statistics.median(f['configure_floor_ms']):.0f} ms"),
        ("  runs with a node failed (exit 1)", None,
         lambda f: f"{sum(1 for rc in f['configure_rcs'] if rc)} of {len(f['configure_rcs'])}"),
        ("  after each push, until all alive again (first; max of the others)", None,
         lambda f: f"{f['configure_recover_s'][0]:.1f} s; {max(f['configure_recover_s'][1:] or [0]):.1f} s"),
        (f"SIGKILL {SCALE_KILLED} agents -> all {SCALE_KILLED} down in nodelist", f"<= {TARGET_DOWN_S:g} s",
         lambda f: f"{f['killed_down_s']:.2f} s"),
        ("  others still alive then", None, lambda f: f"{f['others_alive_after_kill']}"),
        ("load average (1 5 15) when the steady CPU was measured", None, lambda f: f["load_steady"]),
        (f"svc at {SCALE_PROCS} processes on every agent (incr through serve): all in serve's stats", None,
         lambda f: f"{f['procs_sampled_s']:.1f} s ({f['procs_total']} processes, the agents' own included)"),
        (f"serve CPU aggregating stats at 1 Hz, {SCALE_PROCS} processes per agent, no client", None,
         lambda f: f"{f['stats_serve_cpu']:.1f} % ({f['stats_serve_cpu'] - f['serve_cpu']:+.1f} vs 1 process)"),
        ("  the agents' CPU together (sampling their processes, answering heartbeats)", None,
         lambda f: f"{f['stats_agents_cpu']:.1f} % ({f['stats_agents_cpu'] / f['started'] * 1000:.1f} % per 1000)"),
        ("  serve RSS then", None, lambda f: f"{f['stats_serve_rss_mb']:.1f} MiB"),
        ("with one `troupe top --controller` open: serve CPU", None,
         lambda f: f"{f['top_serve_cpu']:.1f} % ({f['top_serve_cpu'] - f['stats_serve_cpu']:+.1f})"),
        ("  troupe top's own CPU / RSS", None, lambda f: f"{f['top_cpu']:.1f} % / {f['top_rss_mb']:.1f} MiB"),
        ("  top's header: nodes (stale), processes; full after its start", None,
         lambda f: f"{f['top_shown'][0]} ({f['top_shown'][1]}), {f['top_shown'][2]}; {f['top_full_s']:.1f} s"),
        ("dashboard in headless chromium: navigation start -> all nodes listed", None,
         lambda f: f"{f['page_full_ms']:.0f} ms (DOMContentLoaded {f['page_dom_ms']:.0f} ms)"),
        ("  with the page open: serve CPU / chromium CPU", None,
         lambda f: f"{f['dash_serve_cpu']:.1f} % / {f['dash_browser_cpu']:.1f} %"),
        ("  page's main thread in tasks over 50 ms; longest", None,
         lambda f: f"{f['page_longtasks'][1]:.0f} ms/s; {f['page_longtasks'][2]:.0f} ms"),
        (f"  page's JS, ms per s (calls in {SERVE_WINDOW_S:g} s), by app.js function", None,
         lambda f: "renderMembers {} of which renderMatrix {}; setBusy {}; fillLogChoices {}; "
                   "mergeLines + renderCharts {}".format(*(
                       f"{f['page_js_ms'][k][0]:.0f} ({f['page_js_ms'][k][1]})"
                       for k in ("renderMembers", "renderMatrix", "setBusy", "fillLogChoices")),
                       f"{f['page_js_ms']['mergeLines'][0] + f['page_js_ms']['renderCharts'][0]:.0f} "
                       f"({f['page_js_ms']['renderCharts'][1]})")),
        (f"  stop/start a watcher through serve -> shown in the matrix, p50 / max ({2 * DASH_EVENT_RUNS})", None,
         lambda f: f"{statistics.median(f['dash_watcher_ms']):.0f} / {max(f['dash_watcher_ms']):.0f} ms"),
        ("    serve's reply to the action, p50", None,
         lambda f: f"{statistics.median(f['dash_watcher_reply_ms']):.0f} ms"),
        ("  SIGKILL one agent -> `down` on the page (serve's nodelist)", None,
         lambda f: f"{f['dash_down_ms'] / 1000:.2f} s ({f['dash_down_serve_ms'] / 1000:.2f} s)"),
        ("  that agent started again -> `alive` on the page (serve's nodelist)", None,
         lambda f: f"{f['dash_back_ms'] / 1000:.2f} s ({f['dash_back_serve_ms'] / 1000:.2f} s)"),
        ("load average (1 5 15) when the stats CPU was measured", None, lambda f: f["load_stats"]),
    ]
    table = [("", "target", *[f"{n} agents" for n in sizes])]
    for label, target, fn in rows:
        table.append((label, target or "", *[cell(n, fn) for n in sizes]))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    print()
    print(f"troupe serve with many real agents  ({time.strftime('%Y-%m-%d %H:%M:%S')}, {os.cpu_count()} CPUs, "
          f"load average at start {load_start}, at end {load_end}; {elapsed:.0f} s)")
    print(f"troupe and troupe-agent built from {source_state()}")
    print("One network namespace; agents on 127.1.x.y (mDNS off), one watcher running each; one serve "
          "probing their ranges (probe_interval 5 s, the default), its dashboard on.")
    print(f"Measured in this order: alive, steady CPU and RSS (one process per agent), status; the stats, "
          f"top and dashboard rows (that watcher at {SCALE_PROCS} processes; the agent the dashboard rows "
          "SIGKILL is started again, with 1); svc back to 1 process; status again; configure; SIGKILL 50.")
    print()
    for row in table:
        print("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    if largest is not None:
        f = runs[largest]

        def median_of(key, scale=1.0):
            return statistics.median(f[key]) * scale if f.get(key) else None

        status_p50 = median_of("status_ms")
        status_floor = median_of("status_direct_ms")
        configure_p50 = median_of("configure_ms", 1 / 1000)
        configure_floor = median_of("configure_floor_ms", 1 / 1000)
        checks = [
            ("alive", f.get("alive_after_last_s"), TARGET_SCALE_ALIVE_S),
            ("serve CPU", f.get("serve_cpu"), TARGET_SCALE_SERVE_CPU),
            ("serve RSS", f.get("serve_rss_mb"), TARGET_SCALE_SERVE_RSS_MB),
            ("status p50", status_p50, TARGET_SCALE_STATUS_P50_MS),
            ("configure p50", configure_p50, TARGET_SCALE_CONFIGURE_S),
            ("down", f.get("killed_down_s"), TARGET_DOWN_S),
        ]
        print()
        print(f"at {largest} agents: " + "; ".join(
            f"{what} {'n/a' if v is None else ('PASS' if v <= t else 'FAIL')}" for what, v, t in checks))
        # A target missed over a floor that moved is judged by the ratio to that floor.
        ratios = [(what, v / floor) for what, v, floor in (
            ("status", status_p50, status_floor), ("configure", configure_p50, configure_floor))
            if v is not None and floor]
        if ratios:
            print("ratio to the floor of the same run: " + "; ".join(
                f"{what} {ratio:.2f}" for what, ratio in ratios))
    for n in sizes:
        if "page_rows" in runs[n]:
            rows_shown = runs[n]["page_rows"]
            print(f"\n{n} agents: the dashboard drew {rows_shown[0]} node rows and {rows_shown[1]} matrix rows "
                  f"({rows_shown[2]} px tall, the charts start {runs[n].get('page_charts_y', 0):.0f} px down); "
                  f"screenshots target/dashboard-screenshots/mesh-{n}.png and mesh-{n}-charts.png")
        for key in ("status_failure_example", "status_after_failure_example", "configure_failure_example"):
            if runs[n].get(key):
                print(f"\n{n} agents, {key.replace('_', ' ')}:\n  " + runs[n][key].replace("\n", "\n  "))
    return report_failures(failures, outdir)


def report(results, load_start, load_end, elapsed, outdir):
    fig = {}
    failures = []
    loads = []
    for phase in ("mdns-lo", "mdns-bridge", "main", "simulated", "fanout"):
        if phase not in results:
            continue
        r = results[phase]
        fig.update(r.get("figures", {}))
        failures += [dict(f, phase=phase) for f in r.get("failures", [])]
        loads += r.get("loads", [])
        if r.get("rc") not in (0, None) and not r.get("failures"):
            failures.append({"phase": phase, "what": "phase exit", "detail": f"exit {r.get('rc')}"})

    rows = []

    def row(section, label, value, target="", ok=None):
        rows.append((section, label, value, target, "" if ok is None else ("PASS" if ok else "FAIL")))

    def med(key):
        v = fig.get(key)
        return statistics.median(v) if v else None

    def runs(key, unit="s", digits=2):
        v = fig.get(key)
        if not v:
            return "n/a"
        return f"median {statistics.median(v):.{digits}f} {unit} ({fmt_s(v, digits)})"

    S = "Discovery"
    row(S, "agent start -> alive, mDNS, one namespace, lo only", runs("mdns_lo_alive_s"))
    row(S, "agent start -> alive, mDNS, 2 namespaces on a bridge", runs("mdns_bridge_alive_s"))
    row(S, "agent start -> alive, probing, probe_interval 5 s (default)", runs("probe5_alive_s"))
    row(S, "agent start -> alive, probing, probe_interval 1 s", runs("probe1_alive_s"))
    m = med("down_poll_s")
    row(S, "SIGKILL -> down in nodelist (polled every 20 ms)", runs("down_poll_s"),
        f"<= {TARGET_DOWN_S:g} s", None if m is None else max(fig["down_poll_s"]) <= TARGET_DOWN_S)
    row(S, "SIGKILL -> node.<name>.down event", runs("down_event_s"))
    row(S, "SIGKILL -> node.<name>.suspect event",
        runs("suspect_event_s") if fig.get("suspect_event_s") else "none published (alive -> down directly)")
    if fig.get("probe24_nodes_s"):
        row(S, "troupe nodes --probe 10.78.0.0/24 --no-mdns --wait 0s (1 live agent)",
            f"{runs('probe24_nodes_s', digits=3)}; nodes listed: {fig.get('probe24_nodes_listed')}")
    m = med("probe24_s")
    row(S, "troupe numwatchers --probe 10.78.0.0/24 --no-mdns (first sweep + 1 call)", runs("probe24_s", digits=3),
        f"<= {TARGET_PROBE24_S:g} s", None if m is None else max(fig["probe24_s"]) <= TARGET_PROBE24_S)
    if "probe_fleet_s" in fig:
        row(S, f"troupe numwatchers --probe 127.0.1.1-{FLEET} (one-shot: sweep + {FLEET} calls)",
            f"{fig['probe_fleet_s']:.2f} s, {fig.get('probe_fleet_found', '?')} found")
    if "fleet_alive_s" in fig:
        row(S, f"serve start -> {FLEET} agents alive", f"{fig['fleet_alive_s']:.2f} s")
    if "fleet_serve_cpu" in fig:
        row(S, f"serve CPU with {FLEET} members, steady state over {SERVE_WINDOW_S:g} s",
            f"{fig['fleet_serve_cpu']:.1f} % of a core ({fig.get('fleet_alive_end', '?')} alive at the end)")
        row(S, f"serve RSS with {FLEET} members (VmRSS / VmHWM)",
            f"{fig['fleet_serve_rss_mb']:.1f} / {fig.get('fleet_serve_hwm_mb', 0):.1f} MiB")
        row(S, f"  (for scale: the {FLEET} agents' CPU together)", f"{fig.get('fleet_agents_cpu', 0):.1f} % of a core")

    S = "Broadcast"
    for n in (32, 128):
        key = f"status{n}_ms"
        if fig.get(key):
            v = fig[key]
            p50, p99 = statistics.median(v), percentile(v, 99)
            target, ok = ("", None)
            if n == 128:
                target, ok = f"p50 <= {TARGET_STATUS128_P50_MS:g} ms", p50 <= TARGET_STATUS128_P50_MS
            row(S, f"troupe status --controller, {n} agents, p50 / p99 ({len(v)} runs)",
                f"{p50:.1f} / {p99:.1f} ms (min {min(v):.1f}, max {max(v):.1f})", target, ok)
            r = fig.get(f"status{n}_serve_ms")
            if r:
                row(S, "  the same request straight to the serve (pyzmq), p50 / p99",
                    f"{statistics.median(r):.1f} / {percentile(r, 99):.1f} ms")
        else:
            row(S, f"troupe status --controller, {n} agents", "n/a")
    for n in (32, 128):
        key = f"blackhole{n}_s"
        if fig.get(key):
            v = fig[key]
            extra = [(x - 1.0) * 1000 for x in v]
            row(S, f"one agent SIGSTOPped, --timeout 1s, {n} agents: total",
                f"{fmt_s(v, 3)} s (timeout + {fmt_s(extra, 0)} ms)",
                f"1 s + <= {TARGET_BLACKHOLE_EXTRA_MS:g} ms", max(extra) <= TARGET_BLACKHOLE_EXTRA_MS)
        else:
            row(S, f"one agent SIGSTOPped, --timeout 1s, {n} agents", "n/a")

    S = "Configure"
    if fig.get("etcd_healthy_s"):
        row(S, "troupe reconfigure -> 3 healthy etcd members (run 1 fresh, then --reset)",
            runs("etcd_healthy_s"))
        row(S, "  of which the reconfigure command itself", runs("etcd_reconfigure_s"))
    else:
        row(S, "troupe reconfigure -> 3 healthy etcd members", "n/a")
    if fig.get("configure100_ms"):
        v = fig["configure100_ms"]
        row(S, f"troupe configure to 100 agents, p50 ({len(v)} runs, files unchanged)",
            f"{statistics.median(v):.0f} ms (min {min(v):.0f}, max {max(v):.0f}); "
            f"first push (files written) {fig.get('configure100_first_ms', 0):.0f} ms")
    else:
        row(S, "troupe configure to 100 agents", "n/a")

    n = fig.get("fanout_n")
    if n:
        S = f"Fan-out to {n} agents"

        def p50_p99(key, target=None):
            v = fig.get(key)
            if not v:
                return row(S, LABELS[key], "n/a")
            p50 = statistics.median(v)
            ok = None if target is None else p50 <= target
            row(S, LABELS[key], f"{p50:.0f} / {percentile(v, 99):.0f} ms ({len(v)} runs, max {max(v):.0f})",
                "" if target is None else f"p50 <= {target:g} ms", ok)
            cpu = fig.get(key + "_cpu")
            if cpu:
                row(S, "  CPU per run: the troupe CLI / all agents together / serve",
                    f"{cpu[0] * 1000:.0f} / {cpu[1] * 1000:.0f} / {cpu[2] * 1000:.0f} ms")

        LABELS = {
            "fanout_cli_status_ms": "troupe status --probe RANGE (sweep + fan-out), p50 / p99",
            "fanout_cli_configure_ms": "troupe configure --probe RANGE (sweep + push), p50 / p99",
            "fanout_status_ms": "troupe status --controller, p50 / p99",
            "fanout_configure_ms": "troupe configure --controller (files unchanged), p50 / p99",
        }
        row(S, "agents started -> all answer a probe", f"{fig.get('fanout_up_s', 0):.1f} s")
        p50_p99("fanout_cli_status_ms")
        p50_p99("fanout_cli_configure_ms")
        if "fanout_alive_s" in fig:
            row(S, "serve start -> all alive", f"{fig['fanout_alive_s']:.1f} s")
        p50_p99("fanout_status_ms", TARGET_FANOUT_STATUS_P50_MS)
        if "fanout_configure_first_ms" in fig:
            row(S, "troupe configure --controller, first push (files written)",
                f"{fig['fanout_configure_first_ms']:.0f} ms", f"<= {TARGET_FANOUT_CONFIGURE_S:g} s",
                fig["fanout_configure_first_ms"] <= TARGET_FANOUT_CONFIGURE_S * 1000)
        p50_p99("fanout_configure_ms", TARGET_FANOUT_CONFIGURE_S * 1000)

    S = "Stats"
    if "agent_cpu_loaded" in fig:
        d = fig["agent_cpu_loaded"] - fig["agent_cpu_idle"]
        # Without a subscriber the agent samples nothing: the target applies to the whole agent
        # sampling and publishing for one subscriber (the sampler alone: bench/run sampling, README).
        row(S, f"troupe-agent with {STATS_PROCS} processes, no subscriber (CPU, loaded - idle)",
            f"{d:.2f} % of a core ({fig['agent_cpu_loaded']:.2f} over {STATS_WINDOW_S:g} s - "
            f"{fig['agent_cpu_idle']:.2f} idle over {IDLE_WINDOW_S:g} s; nothing sampled)")
        d_sub = fig.get('agent_cpu_sub', 0) - fig['agent_cpu_idle']
        row(S, f"  sampling at 1 Hz for one subscriber reading the stream ({SUB_WINDOW_S:g} s)",
            f"{d_sub:.2f} % of a core; "
            f"{fig.get('agent_rate', 0):.0f} samples/s read, {fig.get('agent_pids_seen', 0)} distinct pids; "
            f"agent RSS {fig.get('agent_rss_mb', 0):.1f} MiB",
            f"<= {TARGET_SAMPLING_CPU:g} %", d_sub <= TARGET_SAMPLING_CPU)
    else:
        row(S, f"troupe-agent sampling {STATS_PROCS} processes", "n/a")
    if "cstats_cpu_loaded" in fig:
        d = fig["cstats_cpu_loaded"] - fig["cstats_cpu_idle"]
        row(S, f"circusd-stats on the same {STATS_PROCS} processes, no subscriber (CPU, loaded - idle)",
            f"{d:.2f} % of a core ({fig['cstats_cpu_loaded']:.2f} - {fig['cstats_cpu_idle']:.2f} idle)")
        row(S, f"  with one subscriber reading the stream ({SUB_WINDOW_S:g} s)",
            f"{fig.get('cstats_cpu_sub', 0) - fig['cstats_cpu_idle']:.2f} % of a core; "
            f"{fig.get('cstats_rate', 0):.0f} samples/s read, {fig.get('cstats_pids_seen', 0)} distinct pids; "
            f"circusd-stats RSS {fig.get('cstats_rss_mb', 0):.1f} MiB")
        row(S, f"  circusd itself with {STATS_PROCS} processes (check_delay 5)",
            f"{fig['circusd_cpu_loaded']:.2f} % of a core ({fig['circusd_cpu_idle']:.2f} idle)")
    else:
        row(S, f"circusd-stats on {STATS_PROCS} processes", "n/a")
    if "serve_cpu_32x50" in fig:
        d = fig["serve_cpu_32x50"] - fig["serve_cpu_32x1"]
        row(S, f"serve aggregating {LOAD_NODES} agents x {LOAD_PROCS + 1} processes (CPU)",
            f"{fig['serve_cpu_32x50']:.2f} % of a core; {fig['serve_cpu_32x1']:.2f} with "
            f"{LOAD_NODES} x 1 (difference {d:.2f}); {fig.get('serve_procs_seen', '?')} processes in its snapshot")
    else:
        row(S, f"serve aggregating {LOAD_NODES} x {LOAD_PROCS}", "n/a")

    mesh_swarm.report(fig, row)
    if "simulated" in results:
        rows = [r for r in rows if r[0].startswith("Simulated")]

    if set(results) == {"fanout"}:
        # `--fanout N` ran that phase alone: the other sections would be all n/a.
        rows = [r for r in rows if r[0].startswith("Fan-out")]
    print()
    print(f"troupe at cluster level  ({time.strftime('%Y-%m-%d %H:%M:%S')}, {os.cpu_count()} CPUs, "
          f"load average at start {load_start}, at end {load_end}; {elapsed:.0f} s)")
    print(f"troupe and troupe-agent built from {source_state()}")
    print("Everything in network namespaces of the benchmark's own; loopback agents on 127.0.x.y there.")
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    section = None
    for r in rows:
        if r[0] != section:
            section = r[0]
            print()
            print(section)
        print("  " + "  ".join([r[1].ljust(widths[1]), r[2].ljust(widths[2]), r[3].ljust(widths[3]), r[4]]).rstrip())
    if loads:
        print()
        print("load average (1 5 15 min) when each measurement started:")
        for what, load in loads:
            print(f"  {load}  {what}")
    return report_failures(failures, outdir)


# --------------------------------------------------------------------------------------------
# Inner part: inside one namespace.
# --------------------------------------------------------------------------------------------


class Failure(Exception):
    """A measurement that could not be made: what was run and what came back."""


def clean_env(workdir):
    """The environment of every troupe process: no TROUPE_* variables, no user config, no
    proxies (etcd health checks go straight to loopback)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("TROUPE_") and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    env["HOME"] = workdir
    env["XDG_CONFIG_HOME"] = workdir
    return env


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def status_kb(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class Inner:
    def __init__(self, args):
        self.args = args
        self.workdir = tempfile.mkdtemp(prefix=f"troupe-mesh-{args.inner}-")
        self.env = clean_env(self.workdir)
        self.procs = []  # (what, Popen)
        self.figures = {}
        self.failures = []
        self.loads = []
        import zmq

        self.zmq = zmq

    # ---- bookkeeping -----------------------------------------------------------------------

    def save(self):
        tmp = self.args.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"figures": self.figures, "failures": self.failures, "loads": self.loads,
                       "workdir": self.workdir}, f)
        os.replace(tmp, self.args.out)

    def note_load(self, what):
        self.loads.append((what, loadavg()))

    def fail(self, what, detail):
        log(f"FAILURE {what}: {detail}")
        self.failures.append({"what": what, "detail": detail})
        self.save()

    def attempt(self, what, fn, *a):
        try:
            return fn(*a)
        except Failure as e:
            self.fail(what, str(e))
        except CallError as e:
            self.fail(what, f"{e}")
        except Exception:
            self.fail(what, traceback.format_exc())
        finally:
            self.save()
        return None

    # ---- processes -------------------------------------------------------------------------

    def spawn(self, what, argv, log_name, cwd=None, preexec_fn=None):
        logf = open(os.path.join(self.workdir, log_name), "ab")
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                start_new_session=True, cwd=cwd or self.workdir, env=self.env,
                                preexec_fn=preexec_fn)
        logf.close()
        self.procs.append((what, proc))
        return proc

    def stop(self, procs, timeout=20):
        """SIGTERM to all, wait, SIGKILL what is left."""
        procs = [p for p in procs if p is not None and p.poll() is None]
        for p in procs:
            try:
                p.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
        ids = {id(p) for p in procs}
        self.procs = [(w, p) for w, p in self.procs if id(p) not in ids and p.poll() is None]

    def stop_all(self):
        self.stop([p for _, p in self.procs], timeout=20)

    def run(self, argv, timeout=60, expect=(0,)):
        """Runs a command; returns (rc, stdout, stderr, wall seconds); Failure if rc unexpected."""
        t0 = time.perf_counter()
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                               env=self.env, cwd=self.workdir, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            raise Failure(f"$ {shlex.join(argv)}\n(no exit within {timeout} s)\n"
                          f"stdout: {(e.stdout or b'')[-1500:]!r}\nstderr: {(e.stderr or b'')[-1500:]!r}")
        dt = time.perf_counter() - t0
        if expect is not None and r.returncode not in expect:
            raise Failure(f"$ {shlex.join(argv)}\nexit {r.returncode}\nstdout: {r.stdout[-1500:]}\n"
                          f"stderr: {r.stderr[-1500:]}")
        return r.returncode, r.stdout, r.stderr, dt

    def troupe(self, *args, timeout=60, expect=(0,)):
        return self.run([self.args.troupe, *args], timeout=timeout, expect=expect)

    # ---- agents and serves -----------------------------------------------------------------

    def agent_config(self, name, bind, cluster, mdns=False, watchers="", extra=""):
        d = os.path.join(self.workdir, name)
        os.makedirs(d, exist_ok=True)
        path = os.path.join(d, "troupe-agent.toml")
        with open(path, "w") as f:
            f.write(f'[agent]\nname = "{name}"\ncluster = "{cluster}"\nbind = "{bind}"\n'
                    f'state_dir = "{d}/state"\nmdns = {"true" if mdns else "false"}\n{extra}\n\n{watchers}\n')
        return d, path

    def start_agent(self, name, bind, cluster, mdns=False, watchers="", extra="", prefix=(),
                    level="warn"):
        d, path = self.agent_config(name, bind, cluster, mdns, watchers, extra)
        argv = [*prefix, self.args.agent, "--config", path, "--log-level", level]
        return self.spawn(f"troupe-agent {name}", argv, f"{name}/agent.log", cwd=d)

    def wait_answer(self, endpoint, proc, what, timeout=15, command="nodelist"):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise Failure(f"{what} exited with {proc.returncode} (log in {self.workdir})")
            client = Client(self.zmq, endpoint)
            try:
                client.call(command, timeout=0.5)
                return client
            except CallError as e:
                last = e
                client.close()
            time.sleep(0.05)
        raise Failure(f"{what} did not answer {command} on {endpoint} within {timeout} s: {last}")

    def start_serve(self, label, bind, *extra, nofile=None):
        """With `nofile`, serve starts with that soft limit of open files (as from a login
        shell) instead of this process's raised one."""
        state = os.path.join(self.workdir, f"{label}-state")
        argv = [self.args.troupe, "serve", "--bind", bind, "--port", "5558", "--stats-port", "5559",
                "--events-port", "5560", "--state-dir", state, "--log-level", "info", *extra]
        t0 = time.perf_counter()
        preexec = None
        if nofile is not None:
            def preexec():
                resource.setrlimit(resource.RLIMIT_NOFILE,
                                   (nofile, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
        proc = self.spawn(f"troupe serve {label}", argv, f"{label}.log", preexec_fn=preexec)
        client = self.wait_answer(f"tcp://{bind}:5558", proc, f"troupe serve {label} ({shlex.join(argv)})")
        return proc, client, t0

    @staticmethod
    def states(client):
        try:
            reply = client.call("nodelist", timeout=3)
        except CallError:
            return None
        return {n.get("name"): n.get("state") for n in reply.get("nodes", [])}

    def wait_alive(self, client, names, timeout, poll=0.05):
        """Waits until every name is alive; returns perf_counter() then, or Failure."""
        names = set(names)
        deadline = time.monotonic() + timeout
        st = {}
        while time.monotonic() < deadline:
            st = self.states(client) or st
            if all(st.get(n) == "alive" for n in names):
                return time.perf_counter()
            time.sleep(poll)
        missing = sorted(n for n in names if st.get(n) != "alive")
        raise Failure(f"not alive within {timeout} s: {len(missing)} of {len(names)} "
                      f"(e.g. {missing[:5]}, states {[st.get(n) for n in missing[:5]]})")

    def cpu_percent(self, pids, seconds, during=None):
        """CPU of `pids` (sum, % of one core) over `seconds`; `during(deadline)` runs meanwhile."""
        return self.cpu_groups({"": pids}, seconds, during)[""]

    @staticmethod
    def cpu_groups(groups, seconds, during=None):
        """CPU (% of one core) of each group of pids {key: [pid]} over the same `seconds`; a
        pid that exits meanwhile is left out of its group."""
        def ticks(pid):
            try:
                return cpu_ticks(pid)
            except (OSError, ValueError, IndexError):
                return None

        start = {k: {p: ticks(p) for p in pids} for k, pids in groups.items()}
        w0 = time.monotonic()
        deadline = w0 + seconds
        if during:
            during(deadline)
        left = deadline - time.monotonic()
        if left > 0:
            time.sleep(left)
        end = {k: {p: ticks(p) for p in pids} for k, pids in groups.items()}
        w1 = time.monotonic()
        return {k: sum(end[k][p] - start[k][p] for p in groups[k]
                       if start[k][p] is not None and end[k][p] is not None) / CLK_TCK / (w1 - w0) * 100
                for k in groups}

    # ---- mDNS phases -----------------------------------------------------------------------

    def mdns(self, key, bind_prefix=()):
        # Agents on lo announce 127.0.0.1, which serve adopts only where its operator named
        # it: named here, with a probe interval long enough that the figure stays mDNS's.
        config = os.path.join(self.workdir, "serve-mdns.toml")
        with open(config, "w") as f:
            f.write('cluster = "bm-mdns"\nprobe = ["127.0.0.1"]\nprobe_interval = "1h"\n')
        _, client, _ = self.start_serve("serve-mdns", "127.0.0.1", "--config", config)
        self.note_load(f"mDNS discovery ({key})")
        times = []
        prev = None
        for i in range(3):
            name = f"{key.replace('_', '-')}-{i + 1}"  # a valid hostname too
            if prev is not None:
                self.stop([prev])  # SIGTERM: a goodbye; frees the ports for the next agent
                time.sleep(0.3)
            t0 = time.perf_counter()
            prev = self.start_agent(name, "0.0.0.0", "bm-mdns", mdns=True,
                                    watchers='[watcher.idle]\ncmd = "sleep 1000"\ngraceful_timeout = 1\n',
                                    prefix=bind_prefix(name) if callable(bind_prefix) else bind_prefix,
                                    level="info")
            t1 = self.wait_alive(client, [name], 20, poll=0.02)
            times.append(t1 - t0)
            log(f"{name}: alive {times[-1]:.2f} s after start")
            self.figures[f"{key}_alive_s"] = times
            self.save()
        client.close()

    def phase_mdns_lo(self):
        self.attempt("mDNS discovery, lo only", self.mdns, "mdns_lo")

    def phase_mdns_bridge(self):
        h1 = self.args.agent_netns

        def prefix(name):
            return ["ip", "netns", "exec", h1, "unshare", "--uts", "--", "sh", "-c",
                    'hostname "$0" && exec "$@"', name]

        self.attempt("mDNS discovery, bridge", self.mdns, "mdns_bridge", prefix)

    # ---- main phase ------------------------------------------------------------------------

    def probe_and_down(self):
        zmq = self.zmq
        idle = '[watcher.idle]\ncmd = "sleep 1000"\ngraceful_timeout = 1\n'
        config1 = os.path.join(self.workdir, "probe1s.toml")
        with open(config1, "w") as f:
            f.write('cluster = "bm-probe"\nprobe_interval = "1s"\nmdns = false\n')
        variants = [
            ("probe5", "127.0.0.11", "127.0.4.1-3", ["--cluster", "bm-probe"]),
            ("probe1", "127.0.0.12", "127.0.4.11-13", ["--config", config1]),
        ]
        for key, bind, rng, extra in variants:
            proc, client, _ = self.start_serve(f"serve-{key}", bind, "--no-mdns", "--probe", rng, *extra)
            sub = zmq.Context.instance().socket(zmq.SUB)
            sub.setsockopt(zmq.LINGER, 0)
            sub.connect(f"tcp://{bind}:5560")
            sub.setsockopt(zmq.SUBSCRIBE, b"node.")
            self.note_load(f"probing discovery and SIGKILL -> down ({key})")
            first = int(rng.split("-")[0].rsplit(".", 1)[1])
            try:
                for i in range(3):
                    name = f"{key}-{i + 1}"
                    address = f"127.0.4.{first + i}"
                    # Start at a random phase of the probe interval.
                    time.sleep(random.uniform(0, 1))
                    t0 = time.perf_counter()
                    agent = self.start_agent(name, address, "bm-probe", watchers=idle)
                    t1 = self.wait_alive(client, [name], 20, poll=0.02)
                    self.figures.setdefault(f"{key}_alive_s", []).append(t1 - t0)
                    log(f"{name}: alive {t1 - t0:.2f} s after start (probing)")
                    time.sleep(2.5)  # a few heartbeats answered
                    while sub.poll(0):
                        sub.recv_multipart()
                    t_kill = time.perf_counter()
                    agent.kill()
                    agent.wait(timeout=10)
                    got = {}
                    deadline = time.monotonic() + 15
                    next_poll = 0.0
                    while time.monotonic() < deadline and not {"poll", "down"} <= got.keys():
                        if sub.poll(5):
                            while sub.poll(0):
                                topic = sub.recv_multipart()[0].decode()
                                now = time.perf_counter() - t_kill
                                for ev in ("suspect", "down"):
                                    if topic == f"node.{name}.{ev}":
                                        got.setdefault(ev, now)
                        if "poll" not in got and time.perf_counter() >= next_poll:
                            next_poll = time.perf_counter() + 0.02
                            st = self.states(client)
                            if st and st.get(name) == "down":
                                got["poll"] = time.perf_counter() - t_kill
                    for k, fkey in (("poll", "down_poll_s"), ("down", "down_event_s"),
                                    ("suspect", "suspect_event_s")):
                        if k in got:
                            self.figures.setdefault(fkey, []).append(got[k])
                    if "poll" not in got or "down" not in got:
                        raise Failure(f"{name}: after SIGKILL, within 15 s: {got} (nodelist: "
                                      f"{self.states(client)})")
                    log(f"{name}: down {got['poll']:.2f} s after SIGKILL (event {got['down']:.2f} s)")
                    self.save()
            finally:
                sub.close(0)
                client.close()
                self.stop([proc])

    def probe24(self):
        agent = self.start_agent("p24", "10.78.0.1", "bm-p24",
                                 watchers='[watcher.idle]\ncmd = "sleep 1000"\ngraceful_timeout = 1\n')
        try:
            self.wait_answer("tcp://10.78.0.1:5555", agent, "troupe-agent p24", command="numwatchers").close()
            self.note_load("troupe nodes --probe 10.78.0.0/24")
            state = os.path.join(self.workdir, "cli-state")
            common = ["--probe", "10.78.0.0/24", "--no-mdns", "--cluster", "bm-p24", "--state-dir", state,
                      "--controller", "tcp://127.0.0.1:1"]
            # As asked: `troupe nodes ... --wait 0s`, and what it listed.
            times, listed = [], []
            for _ in range(3):
                argv = ["nodes", *common, "--wait", "0s", "--json"]
                _, out, err, dt = self.troupe(*argv, timeout=30)
                nodes = json.loads(out)
                times.append(dt)
                listed.append(len(nodes))
                log(f"/24 nodes --wait 0s: {dt:.3f} s, {len(nodes)} listed")
            self.figures["probe24_nodes_s"] = times
            self.figures["probe24_nodes_listed"] = listed
            if listed != [1] * len(listed):
                self.fail("troupe nodes --wait 0s",
                          f"$ troupe {shlex.join(argv)}\n{out.strip()}\n(exit 0 after {dt:.3f} s; nodes listed "
                          f"per run: {listed}; the agent on 10.78.0.1 answers: the command returns before "
                          f"its first probe sweep has completed)")
            # A one-shot command waits for the first sweep: the time of a /24 sweep plus one call.
            times = []
            for _ in range(3):
                argv = ["numwatchers", *common, "--json"]
                _, out, err, dt = self.troupe(*argv, timeout=30)
                replies = json.loads(out)
                if list(replies) != ["p24"] or replies["p24"].get("status") != "ok":
                    raise Failure(f"$ troupe {shlex.join(argv)}\n{out[:1500]}\nstderr {err[:500]}")
                times.append(dt)
                log(f"/24 sweep + numwatchers: {dt:.3f} s")
            self.figures["probe24_s"] = times
        finally:
            self.stop([agent])

    def fleet_start(self):
        template = os.path.join(self.workdir, "peers.j2")
        with open(template, "w") as f:
            f.write("{% for p in peers %}{{ p.index }}={{ p.name }}@{{ p.address }}\n{% endfor %}")
        self.fleet = []
        self.fleet_dirs = []
        self.note_load(f"starting {FLEET} agents")
        t0 = time.perf_counter()
        for i in range(1, FLEET + 1):
            name = f"f{i:03d}"
            d = os.path.join(self.workdir, name)
            watchers = (
                f'[watcher.svc]\ncmd = "sleep 1000"\ngraceful_timeout = 1\n'
                f'[[watcher.svc.template]]\nsource = "{template}"\ndest = "{d}/peers.txt"\n\n'
                f'[watcher.load]\ncmd = "sleep 1000"\nnumprocesses = {LOAD_PROCS}\nautostart = false\n'
                f'graceful_timeout = 1\n'
            )
            self.fleet.append(self.start_agent(name, f"127.0.1.{i}", "bm-fleet", watchers=watchers))
            self.fleet_dirs.append(d)
        spawned = time.perf_counter() - t0
        # All up? One-shot probes until every agent answers (also a figure).
        state = os.path.join(self.workdir, "cli-state")
        found = 0
        for attempt in range(6):
            dead = [i for i, p in enumerate(self.fleet) if p.poll() is not None]
            if dead:
                raise Failure(f"agents exited: {[f'f{i + 1:03d}' for i in dead[:5]]} (logs in {self.workdir})")
            argv = ["numwatchers", "--probe", f"127.0.1.1-{FLEET}", "--no-mdns", "--json", "--timeout", "5s",
                    "--cluster", "bm-fleet", "--state-dir", state, "--controller", "tcp://127.0.0.1:1"]
            _, out, _, dt = self.troupe(*argv, timeout=60, expect=(0, 1, 3))
            found = sum(1 for r in json.loads(out or "{}").values() if r.get("status") == "ok")
            if found == FLEET:
                self.figures["probe_fleet_s"] = dt
                self.figures["probe_fleet_found"] = found
                break
            time.sleep(1)
        log(f"{FLEET} agents spawned in {spawned:.2f} s; {found} answer a probe")
        if found != FLEET:
            raise Failure(f"only {found} of {FLEET} agents answer `troupe {shlex.join(argv)}`")

    def fleet_membership(self):
        names = [f"f{i:03d}" for i in range(1, FLEET + 1)]
        proc, client, t0 = self.start_serve("serve-200", "127.0.0.20", "--no-mdns", "--cluster", "bm-fleet",
                                            "--probe", f"127.0.1.1-{FLEET}")
        try:
            t1 = self.wait_alive(client, names, 60, poll=0.1)
            self.figures["fleet_alive_s"] = t1 - t0
            log(f"serve start -> {FLEET} alive: {t1 - t0:.2f} s; settling 3 s")
            time.sleep(3)
            self.note_load(f"serve CPU with {FLEET} members")
            agent_pids = [p.pid for p in self.fleet]
            a0 = sum(cpu_ticks(p) for p in agent_pids)
            w0 = time.monotonic()
            self.figures["fleet_serve_cpu"] = self.cpu_percent([proc.pid], SERVE_WINDOW_S)
            a1 = sum(cpu_ticks(p) for p in agent_pids)
            self.figures["fleet_agents_cpu"] = (a1 - a0) / CLK_TCK / (time.monotonic() - w0) * 100
            self.figures["fleet_serve_rss_mb"] = (rss_kb(proc.pid) or 0) / 1024
            self.figures["fleet_serve_hwm_mb"] = (status_kb(proc.pid, "VmHWM") or 0) / 1024
            st = self.states(client) or {}
            self.figures["fleet_alive_end"] = sum(1 for s in st.values() if s == "alive")
            log(f"serve with {FLEET}: CPU {self.figures['fleet_serve_cpu']:.1f} %, "
                f"RSS {self.figures['fleet_serve_rss_mb']:.1f} MiB")
        finally:
            client.close()
            self.stop([proc])

    def status_runs(self, n, endpoint):
        self.note_load(f"troupe status to {n} agents")
        for _ in range(STATUS_WARMUP):
            self.troupe("status", "--controller", endpoint, "--timeout", "5s")
        _, out, _, _ = self.troupe("status", "--controller", endpoint, "--timeout", "5s", "--json")
        replies = json.loads(out)
        ok = [k for k, v in replies.items() if v.get("status") == "ok"]
        if len(ok) != n:
            raise Failure(f"$ troupe status --controller {endpoint} --json: {len(ok)} ok replies of {len(replies)}")
        times = []
        for _ in range(STATUS_RUNS):
            _, _, _, dt = self.troupe("status", "--controller", endpoint, "--timeout", "5s")
            times.append(dt * 1000)
        self.figures[f"status{n}_ms"] = times
        log(f"status to {n}: p50 {statistics.median(times):.1f} ms, max {max(times):.1f} ms")
        # For scale: the request the CLI sends, straight to the serve from a warm pyzmq client
        # (no process start, no discovery check, no rendering).
        client = Client(self.zmq, endpoint)
        try:
            rts = []
            for _ in range(STATUS_RUNS):
                msg, reply, dt = client.raw("status", {"node": "*", "node_timeout": 5.0}, timeout=10)
                nodes = reply.get("nodes") or {}
                if reply.get("status") != "ok" or sum(1 for r in nodes.values() if r.get("status") == "ok") != n:
                    raise Failure(f"request {msg}\n-> reply status {reply.get('status')}, {len(nodes)} nodes")
                rts.append(dt * 1000)
            self.figures[f"status{n}_serve_ms"] = rts
        finally:
            client.close()

    def blackhole(self, n, endpoint, client, victim_index):
        victim = self.fleet[victim_index]
        name = f"f{victim_index + 1:03d}"
        self.note_load(f"black-holed agent among {n}")
        totals = []
        for _ in range(BLACKHOLE_RUNS):
            self.wait_alive(client, [name], 15)
            time.sleep(1.2)
            argv = ["status", "--controller", endpoint, "--timeout", "1s", "--json"]
            os.kill(victim.pid, signal.SIGSTOP)
            try:
                rc, out, err, dt = self.troupe(*argv, timeout=30, expect=None)
            finally:
                os.kill(victim.pid, signal.SIGCONT)
            try:
                replies = json.loads(out)
            except ValueError:
                raise Failure(f"$ troupe {shlex.join(argv)}\nexit {rc}\nstdout {out[:1500]}\nstderr {err[:1500]}")
            mine = replies.get(name)
            others_ok = sum(1 for k, v in replies.items() if k != name and v.get("status") == "ok")
            if not (mine and mine.get("timeout") is True) or others_ok != n - 1 or rc != 1:
                raise Failure(f"$ troupe {shlex.join(argv)} (with {name} stopped)\nexit {rc}; "
                              f"{name}: {json.dumps(mine)}; {others_ok} others ok of {len(replies) - 1}\n"
                              f"stderr {err[:500]}")
            totals.append(dt)
            log(f"black hole among {n}: {dt:.3f} s")
        self.figures[f"blackhole{n}_s"] = totals

    def serve_stats(self, endpoint, proc, client):
        def procs_seen():
            snap = client.call("stats_snapshot", timeout=5)["snapshot"]
            return sum(len(w.get("processes", {})) for node in snap.get("nodes", {}).values()
                       for w in node.get("watchers", {}).values())

        self.note_load(f"serve CPU, {LOAD_NODES} x 1 process")
        self.figures["serve_cpu_32x1"] = self.cpu_percent([proc.pid], SERVE_WINDOW_S)
        self.troupe("start", "load", "--waiting", "--controller", endpoint, "--timeout", "60s", timeout=120)
        want = LOAD_NODES * (LOAD_PROCS + 1)
        deadline = time.monotonic() + 30
        seen = 0
        while time.monotonic() < deadline:
            seen = procs_seen()
            if seen >= want:
                break
            time.sleep(0.5)
        if seen < want:
            raise Failure(f"serve's stats_snapshot shows {seen} processes, expected {want}")
        time.sleep(3)
        self.note_load(f"serve CPU, {LOAD_NODES} x {LOAD_PROCS + 1} processes")
        self.figures["serve_cpu_32x50"] = self.cpu_percent([proc.pid], SERVE_WINDOW_S)
        self.figures["serve_procs_seen"] = procs_seen()
        log(f"serve CPU 32 x 1: {self.figures['serve_cpu_32x1']:.2f} %, "
            f"32 x 51: {self.figures['serve_cpu_32x50']:.2f} %")

    def fleet_broadcast(self, n, with_stats=False):
        bind = f"127.0.0.{n}" if n < 255 else "127.0.0.250"
        proc, client, _ = self.start_serve(f"serve-{n}", bind, "--no-mdns", "--cluster", "bm-fleet",
                                           "--probe", f"127.0.1.1-{n}")
        endpoint = f"tcp://{bind}:5558"
        try:
            self.wait_alive(client, [f"f{i:03d}" for i in range(1, n + 1)], 30, poll=0.1)
            time.sleep(1)
            self.attempt(f"troupe status to {n} agents", self.status_runs, n, endpoint)
            self.attempt(f"black-holed agent among {n}", self.blackhole, n, endpoint, client, n - 1)
            if with_stats:
                try:
                    self.attempt(f"serve aggregating {LOAD_NODES} x {LOAD_PROCS}", self.serve_stats,
                                 endpoint, proc, client)
                finally:
                    self.attempt("stopping the load watchers", self.troupe, "stop", "load", "--waiting",
                                 "--controller", endpoint, "--timeout", "30s")
        finally:
            client.close()
            self.stop([proc])

    def fleet_configure(self):
        n = 100
        proc, client, _ = self.start_serve("serve-100", "127.0.0.100", "--no-mdns", "--cluster", "bm-fleet",
                                           "--probe", f"127.0.1.1-{n}")
        endpoint = f"tcp://127.0.0.100:5558"
        try:
            self.wait_alive(client, [f"f{i:03d}" for i in range(1, n + 1)], 30, poll=0.1)
            time.sleep(1)
            self.note_load("troupe configure to 100 agents")
            argv = ["configure", "--controller", endpoint, "--timeout", "10s"]
            _, _, _, dt = self.troupe(*argv)
            self.figures["configure100_first_ms"] = dt * 1000
            for d in (self.fleet_dirs[0], self.fleet_dirs[n - 1]):
                lines = open(os.path.join(d, "peers.txt")).read().splitlines()
                if len(lines) != n:
                    raise Failure(f"$ troupe {shlex.join(argv)}: {d}/peers.txt has {len(lines)} lines, not {n}")
            times = []
            for _ in range(CONFIGURE_RUNS):
                _, _, _, dt = self.troupe(*argv)
                times.append(dt * 1000)
            self.figures["configure100_ms"] = times
            log(f"configure to 100: p50 {statistics.median(times):.0f} ms")
        finally:
            client.close()
            self.stop([proc])

    def etcd(self):
        names = ["etcd-a", "etcd-b", "etcd-c"]
        addresses = [f"127.0.2.{i}" for i in (1, 2, 3)]
        agents = []
        for name, address in zip(names, addresses):
            d = os.path.join(self.workdir, name)
            watcher = (f'[watcher.etcd]\ncmd = "etcd"\n'
                       f'working_dir = "{d}"\nprofile = "etcd"\ndata_dir = ["{d}/data"]\n'
                       f'autostart = false\ngraceful_timeout = 5\n')
            agents.append(self.start_agent(name, address, "bm-etcd", watchers=watcher))
        proc, client, _ = self.start_serve("serve-etcd", "127.0.0.40", "--no-mdns", "--cluster", "bm-etcd",
                                           "--probe", "127.0.2.1-3")
        endpoint = "tcp://127.0.0.40:5558"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

        def healthy(address):
            try:
                with opener.open(f"http://{address}:2379/health", timeout=0.5) as r:
                    return json.load(r).get("health") == "true"
            except Exception:
                return False

        try:
            self.wait_alive(client, names, 20)
            for run in range(ETCD_RUNS):
                argv = ["reconfigure", "--controller", endpoint, "--timeout", "20s"]
                if run > 0:
                    argv += ["--reset", "--yes"]
                self.note_load(f"troupe {' '.join(argv[:1] + argv[5:])} -> etcd healthy (run {run + 1})")
                t0 = time.perf_counter()
                _, out, _, dt = self.troupe(*argv, timeout=90)
                deadline = time.monotonic() + 60
                ok = False
                while time.monotonic() < deadline:
                    if all(healthy(a) for a in addresses):
                        ok = True
                        break
                    time.sleep(0.05)
                t1 = time.perf_counter()
                if not ok:
                    raise Failure(f"$ troupe {shlex.join(argv)}\n{out}\nno 3 healthy members within 60 s: "
                                  f"{[healthy(a) for a in addresses]}")
                members = self.run(["etcdctl", "--endpoints", ",".join(f"http://{a}:2379" for a in addresses),
                                    "--command-timeout=3s", "member", "list"], timeout=15)[1]
                if len(members.strip().splitlines()) != 3:
                    raise Failure(f"etcdctl member list after run {run + 1}:\n{members}")
                self.figures.setdefault("etcd_reconfigure_s", []).append(dt)
                self.figures.setdefault("etcd_healthy_s", []).append(t1 - t0)
                log(f"etcd run {run + 1}: reconfigure {dt:.2f} s, healthy after {t1 - t0:.2f} s")
                self.save()
                time.sleep(1)
        finally:
            client.close()
            self.stop([proc])
            self.stop(agents, timeout=20)

    def count_stats(self, endpoint, prefix):
        """A SUB counting `prefix<pid>` samples until a deadline: returns (run, result dict)."""
        zmq = self.zmq
        sub = zmq.Context.instance().socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.connect(endpoint)
        sub.setsockopt(zmq.SUBSCRIBE, prefix.encode())
        result = {"n": 0, "pids": set(), "seconds": 0.0}

        def during(deadline):
            # Let the subscription settle, then count over the rest of the window.
            time.sleep(1)
            while sub.poll(0):
                sub.recv_multipart()
            t0 = time.monotonic()
            while time.monotonic() < deadline:
                if sub.poll(max(1, int((deadline - time.monotonic()) * 1000))):
                    topic = sub.recv_multipart()[0].decode(errors="replace")
                    rest = topic[len(prefix):]
                    if rest.isdigit():
                        result["n"] += 1
                        result["pids"].add(rest)
            result["seconds"] = time.monotonic() - t0
            sub.close(0)

        return during, result

    def agent_stats(self):
        watcher = (f'[watcher.many]\ncmd = "sleep 1000"\nnumprocesses = {STATS_PROCS}\nautostart = false\n'
                   f'graceful_timeout = 2\n')
        agent = self.start_agent("stats-agent", "127.0.3.1", "bm-stats", watchers=watcher)
        client = None
        try:
            client = self.wait_answer("tcp://127.0.3.1:5555", agent, "troupe-agent stats-agent",
                                      command="numwatchers")
            time.sleep(2)
            self.note_load("troupe-agent idle")
            self.figures["agent_cpu_idle"] = self.cpu_percent([agent.pid], IDLE_WINDOW_S)
            client.call("start", {"name": "many", "waiting": True}, timeout=120)
            deadline = time.monotonic() + 60
            n = 0
            while time.monotonic() < deadline:
                n = len(client.pids("many"))
                if n >= STATS_PROCS:
                    break
                time.sleep(0.2)
            if n < STATS_PROCS:
                raise Failure(f"troupe-agent runs {n} of {STATS_PROCS} processes 60 s after start")
            time.sleep(3)
            self.note_load(f"troupe-agent sampling {STATS_PROCS} processes")
            self.figures["agent_cpu_loaded"] = self.cpu_percent([agent.pid], STATS_WINDOW_S)
            self.note_load(f"troupe-agent sampling {STATS_PROCS} processes, one subscriber")
            during, counted = self.count_stats("tcp://127.0.3.1:5557", "stat.many.")
            self.figures["agent_cpu_sub"] = self.cpu_percent([agent.pid], SUB_WINDOW_S, during)
            self.figures["agent_rate"] = counted["n"] / max(counted["seconds"], 1e-9)
            self.figures["agent_pids_seen"] = len(counted["pids"])
            self.figures["agent_rss_mb"] = (rss_kb(agent.pid) or 0) / 1024
            log(f"troupe-agent: idle {self.figures['agent_cpu_idle']:.2f} %, with {STATS_PROCS}: "
                f"{self.figures['agent_cpu_loaded']:.2f} %, {self.figures['agent_rate']:.0f} samples/s")
            client.call("stop", {"name": "many", "waiting": True}, timeout=60)
        finally:
            if client is not None:
                client.close()
            self.stop([agent], timeout=30)

    def circus_stats(self):
        ini = os.path.join(self.workdir, "circus.ini")
        with open(ini, "w") as f:
            f.write("[circus]\ncheck_delay = 5\nendpoint = tcp://127.0.0.1:6555\n"
                    "pubsub_endpoint = tcp://127.0.0.1:6556\nstats_endpoint = tcp://127.0.0.1:6557\n"
                    "statsd = true\n\n"
                    f"[watcher:many]\ncmd = sleep 1000\nnumprocesses = {STATS_PROCS}\nautostart = false\n"
                    "graceful_timeout = 2\n")
        circusd = self.spawn("circusd", [self.args.circusd, "--log-level", "info", ini], "circusd.log")
        client = None
        try:
            client = self.wait_answer("tcp://127.0.0.1:6555", circusd, "circusd", timeout=30, command="list")
            deadline = time.monotonic() + 30
            stats_pids = []
            while time.monotonic() < deadline and not stats_pids:
                try:
                    stats_pids = client.pids("circusd-stats")
                except CallError:
                    pass
                time.sleep(0.2)
            if not stats_pids:
                raise Failure("circusd-stats is not running (statsd = true)")
            log_text = open(os.path.join(self.workdir, "circusd.log"), errors="replace").read()
            if "Multicast discovery is disabled" in log_text:
                self.fail("circusd", "circusd could not open its multicast discovery socket")
            time.sleep(2)
            self.note_load("circusd + circusd-stats idle")
            cpu = self.cpu_groups({"circusd": [circusd.pid], "stats": stats_pids}, IDLE_WINDOW_S)
            self.figures["circusd_cpu_idle"] = cpu["circusd"]
            self.figures["cstats_cpu_idle"] = cpu["stats"]
            client.call("start", {"name": "many", "waiting": True}, timeout=180, retry_locked=True)
            deadline = time.monotonic() + 120
            n = 0
            while time.monotonic() < deadline:
                try:
                    n = len(client.pids("many"))
                except CallError:
                    pass
                if n >= STATS_PROCS:
                    break
                time.sleep(0.5)
            if n < STATS_PROCS:
                raise Failure(f"circusd runs {n} of {STATS_PROCS} processes 120 s after start")
            stats_pids = client.pids("circusd-stats")
            time.sleep(3)
            self.note_load(f"circusd + circusd-stats with {STATS_PROCS} processes")
            groups = {"circusd": [circusd.pid], "stats": stats_pids}
            cpu = self.cpu_groups(groups, STATS_WINDOW_S)
            self.figures["circusd_cpu_loaded"] = cpu["circusd"]
            self.figures["cstats_cpu_loaded"] = cpu["stats"]
            self.note_load(f"circusd + circusd-stats with {STATS_PROCS} processes, one subscriber")
            during, counted = self.count_stats("tcp://127.0.0.1:6557", "stat.many.")
            self.figures["cstats_cpu_sub"] = self.cpu_groups(groups, SUB_WINDOW_S, during)["stats"]
            self.figures["cstats_rate"] = counted["n"] / max(counted["seconds"], 1e-9)
            self.figures["cstats_pids_seen"] = len(counted["pids"])
            self.figures["cstats_rss_mb"] = sum(rss_kb(p) or 0 for p in stats_pids) / 1024
            log(f"circusd-stats: idle {self.figures['cstats_cpu_idle']:.2f} %, with {STATS_PROCS}: "
                f"{self.figures['cstats_cpu_loaded']:.2f} %; circusd {self.figures['circusd_cpu_loaded']:.2f} %")
        finally:
            if client is not None:
                client.close()
            self.stop([circusd], timeout=40)

    # ---- `--agents N`: one serve, FLEET then N real agents --------------------------------

    @staticmethod
    def scale_address(i):
        return f"127.1.{i // 250}.{i % 250 + 1}"

    @staticmethod
    def scale_ranges(n):
        return ",".join(f"127.1.{b}.1-{min(250, n - b * 250)}" for b in range((n + 249) // 250))

    def scale_run(self, n):
        """Serve first, probing the agents' ranges; then n agents; the figures of one size."""
        fig = {}
        self.figures.setdefault("scale", {})[str(n)] = fig
        template = os.path.join(self.workdir, "peers.j2")
        with open(template, "w") as f:
            f.write("{% for p in peers %}{{ p.index }}={{ p.name }}@{{ p.address }}\n{% endfor %}")
        bind = "127.0.0.30"
        endpoint = f"tcp://{bind}:5558"
        # The dashboard listens from the start (no page open until scale_dashboard).
        serve_started = time.perf_counter()
        proc, client, _ = self.start_serve(f"serve-scale-{n}", bind, "--no-mdns", "--cluster", "bm-scale",
                                           "--probe", self.scale_ranges(n), "--http", f"{bind}:5580",
                                           nofile=self.nofile_soft)
        sub = self.zmq.Context.instance().socket(self.zmq.SUB)
        sub.setsockopt(self.zmq.LINGER, 0)
        sub.setsockopt(self.zmq.RCVHWM, 0)
        sub.connect(f"tcp://{bind}:5560")
        sub.setsockopt(self.zmq.SUBSCRIBE, b"node.")
        agents, dirs, names = [], [], []
        try:
            self.note_load(f"starting {n} agents (scale)")
            t0 = time.perf_counter()
            def start(i):
                """Agent i (again, as the dashboard figures do)."""
                d = os.path.join(self.workdir, f"s{n}-{i + 1:04d}")
                watchers = (
                    f'[watcher.svc]\ncmd = "sleep 100000"\ngraceful_timeout = 1\n'
                    f'[[watcher.svc.template]]\nsource = "{template}"\ndest = "{d}/peers.txt"\n\n'
                    + "".join(f'[watcher.spare{k}]\ncmd = "sleep 100000"\nautostart = false\n'
                              f'graceful_timeout = 1\n' for k in range(1, 4))
                )
                return self.start_agent(os.path.basename(d), self.scale_address(i), "bm-scale", watchers=watchers)

            for i in range(n):
                agents.append(start(i))
                dirs.append(os.path.join(self.workdir, f"s{n}-{i + 1:04d}"))
                names.append(f"s{n}-{i + 1:04d}")
            t_last = time.perf_counter()
            fig["started"] = n
            fig["spawn_s"] = t_last - t0
            # Floor: the last agent itself answers (its own start, loopback).
            last = self.wait_answer(f"tcp://{self.scale_address(n - 1)}:5555", agents[-1],
                                    f"agent {names[-1]}", timeout=60, command="nodeinfo")
            last.close()
            fig["last_answers_s"] = time.perf_counter() - t_last
            t_alive = self.wait_alive(client, names, 120, poll=0.2)
            fig["alive_after_last_s"] = t_alive - t_last
            log(f"{n} agents spawned in {fig['spawn_s']:.1f} s; all alive {fig['alive_after_last_s']:.2f} s "
                f"after the last start (it answered after {fig['last_answers_s']:.2f} s)")
            self.save()

            while sub.poll(0):
                sub.recv_multipart()
            time.sleep(SCALE_SETTLE_S)
            fig["load_steady"] = loadavg()
            self.note_load(f"serve steady state with {n} members")
            cpu = self.cpu_groups({"serve": [proc.pid], "agents": [p.pid for p in agents]}, SERVE_WINDOW_S)
            fig["serve_cpu"] = cpu["serve"]
            fig["agents_cpu"] = cpu["agents"]
            fig["serve_rss_mb"] = (rss_kb(proc.pid) or 0) / 1024
            fig["serve_hwm_mb"] = (status_kb(proc.pid, "VmHWM") or 0) / 1024
            fig["serve_fds"] = len(os.listdir(f"/proc/{proc.pid}/fd"))
            fig["serve_threads"] = len(os.listdir(f"/proc/{proc.pid}/task"))
            downs = 0
            while sub.poll(0):
                if sub.recv_multipart()[0].decode().endswith(".down"):
                    downs += 1
            fig["down_events"] = downs
            st = self.states(client) or {}
            fig["alive_end"] = sum(1 for s in st.values() if s == "alive")
            log(f"serve with {n}: CPU {fig['serve_cpu']:.1f} %, RSS {fig['serve_rss_mb']:.1f} MiB, "
                f"{downs} down events, {fig['alive_end']} alive; agents {fig['agents_cpu']:.1f} %")
            self.save()

            # status at steady state, as the CPU and memory above; again after the heavy phases.
            self.attempt(f"status to {n} through serve", self.scale_status, n, endpoint, fig)
            self.attempt("libzmq's memory per connection", self.zmq_memory_floor, n, fig)
            stats = self.attempt(f"{SCALE_PROCS} processes per agent, {n} agents", self.scale_stats,
                                 n, endpoint, proc, agents, fig)
            if stats:
                self.attempt(f"troupe top with {n} agents", self.scale_top, n, endpoint, proc, agents, fig)
            self.attempt(f"dashboard with {n} agents", self.scale_dashboard, n, bind, proc, client,
                         agents, names, start, fig)
            if stats:
                # status, configure and SIGKILL as before the stats rows: one process each (a
                # configure push restarts svc; 10 000 processes restarting at once loaded the
                # machine past 100).
                self.attempt(f"svc back to 1 process on {n} agents", self.scale_one_process, n, endpoint)
            self.attempt(f"status to {n} through serve, after", self.scale_status, n, endpoint, fig,
                         "status_after")
            self.attempt(f"configure to {n} through serve", self.scale_configure, n, endpoint, fig, dirs,
                         client, names, agents)
            self.attempt(f"SIGKILL {SCALE_KILLED} of {n}", self.scale_kill, n, client, agents, names, fig)
            # Connections' queues and the stats history fill for minutes: RSS at the end too.
            fig["serve_rss_end_mb"] = (rss_kb(proc.pid) or 0) / 1024
            fig["serve_age_end_s"] = time.perf_counter() - serve_started
        finally:
            sub.close(0)
            client.close()
            self.stop([proc])
            log(f"stopping the {n} agents")
            self.stop(agents, timeout=60)
            self.save()

    def zmq_memory_floor(self, n, fig):
        """What stock libzmq keeps per TCP connection, for comparison with serve's (troupe builds
        libzmq with smaller queue chunks and buffers: vendor/zeromq-src): a separate pyzmq process
        opens ZMQ_FLOOR_CONNECTIONS DEALERs to agents and makes ZMQ_FLOOR_ROUND_TRIPS `status`
        round trips on each; its RSS growth per connection when connected and after the round
        trips (each pipe's queue takes a new 256-message chunk as messages pass, until two
        chunks per direction are in use)."""
        count = min(ZMQ_FLOOR_CONNECTIONS, n)
        script = (
            "import json, sys, zmq\n"
            "def rss():\n"
            "    return int([l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1])\n"
            "ctx = zmq.Context(); ctx.set(zmq.MAX_SOCKETS, 4096)\n"
            "endpoints = json.loads(sys.argv[1]); rounds = int(sys.argv[2])\n"
            "base = rss(); socks = []\n"
            "for e in endpoints:\n"
            "    s = ctx.socket(zmq.DEALER); s.setsockopt(zmq.LINGER, 0); s.connect(e); socks.append(s)\n"
            "req = json.dumps({'command': 'status', 'properties': {}, 'id': 'floor'}).encode()\n"
            "for s in socks: s.send(req)\n"
            "for s in socks: s.recv()\n"
            "connected = rss()\n"
            "for _ in range(rounds):\n"
            "    for s in socks: s.send(req)\n"
            "    for s in socks: s.recv()\n"
            "print(json.dumps([(connected - base) / len(socks), (rss() - base) / len(socks)]))\n"
        )
        endpoints = [f"tcp://{self.scale_address(i)}:5555" for i in range(count)]
        out = subprocess.run([sys.executable, "-c", script, json.dumps(endpoints), str(ZMQ_FLOOR_ROUND_TRIPS)],
                             capture_output=True, text=True, timeout=600)
        if out.returncode != 0:
            raise Failure(f"the pyzmq memory probe failed: {out.stderr[-500:]}")
        fig["zmq_kib_per_connection"] = json.loads(out.stdout)
        connected, used = fig["zmq_kib_per_connection"]
        log(f"libzmq (pyzmq): {connected:.0f} KiB a connection connected, {used:.0f} KiB after "
            f"{ZMQ_FLOOR_ROUND_TRIPS} round trips")

    def stats_counts(self, client):
        """From serve's stats snapshot: (nodes, nodes stale, processes of svc, all processes)."""
        reply = client.call("stats_snapshot", timeout=20)
        nodes = (reply.get("snapshot") or {}).get("nodes") or {}
        svc = sum(len(((node.get("watchers") or {}).get("svc") or {}).get("total", {}).get("pid") or [])
                  for node in nodes.values())
        every = sum(len((node.get("total") or {}).get("pid") or []) for node in nodes.values())
        return len(nodes), sum(1 for node in nodes.values() if node.get("stale")), svc, every

    def scale_one_process(self, n, endpoint):
        """svc back to one process on every agent (`set`: the agent the dashboard rows restarted
        has one already), until serve's snapshot says so."""
        client = Client(self.zmq, endpoint)
        try:
            msg, reply, _ = client.raw("set", {"name": "svc", "options": {"numprocesses": 1}, "node": "*",
                                               "node_timeout": 30.0}, timeout=120)
            if reply.get("status") != "ok":
                raise Failure(f"request {msg}\n-> {json.dumps(reply)[:600]}")
            deadline = time.monotonic() + 120
            counts = None
            while time.monotonic() < deadline:
                counts = self.stats_counts(client)
                if counts[0] == n and counts[2] == n:
                    return
                time.sleep(1)
            raise Failure(f"serve's stats snapshot after `set svc numprocesses 1` on all: {counts[2]} svc "
                          f"processes, want {n}, after 120 s")
        finally:
            client.close()

    def scale_stats(self, n, endpoint, proc, agents, fig):
        """Every agent's svc from 1 to SCALE_PROCS processes (`incr` through serve); once serve's
        stats snapshot has them all, serve's and the agents' CPU with serve aggregating them."""
        client = Client(self.zmq, endpoint)
        try:
            self.note_load(f"incr svc to {SCALE_PROCS} processes on {n} agents")
            msg, reply, _ = client.raw("incr", {"name": "svc", "nb": SCALE_PROCS - 1, "node": "*",
                                                "node_timeout": 30.0}, timeout=120)
            nodes = reply.get("nodes") or {}
            ok = sum(1 for r in nodes.values() if r.get("status") == "ok")
            if reply.get("status") != "ok" or ok != n:
                raise Failure(f"request {msg}\n-> reply status {reply.get('status')}, {ok} ok of {len(nodes)}: "
                              f"{json.dumps(reply)[:600]}")
            t0 = time.perf_counter()
            deadline = time.monotonic() + 120
            counts = None
            while time.monotonic() < deadline:
                counts = self.stats_counts(client)
                if counts[0] == n and counts[1] == 0 and counts[2] == SCALE_PROCS * n:
                    break
                time.sleep(1)
            else:
                raise Failure(f"serve's stats snapshot after `incr svc {SCALE_PROCS - 1}` on all: {counts[0]} "
                              f"nodes, {counts[1]} stale, {counts[2]} svc processes (want {n}, 0, "
                              f"{SCALE_PROCS * n}) after 120 s")
            fig["procs_sampled_s"] = time.perf_counter() - t0
            fig["procs_total"] = counts[3]
        finally:
            client.close()
        time.sleep(SCALE_SETTLE_S)
        self.note_load(f"serve aggregating {SCALE_PROCS} processes x {n} agents")
        fig["load_stats"] = loadavg()
        cpu = self.cpu_groups({"serve": [proc.pid], "agents": [p.pid for p in agents]}, SERVE_WINDOW_S)
        fig["stats_serve_cpu"] = cpu["serve"]
        fig["stats_agents_cpu"] = cpu["agents"]
        fig["stats_serve_rss_mb"] = (rss_kb(proc.pid) or 0) / 1024
        log(f"{SCALE_PROCS} processes x {n} agents: all in serve's snapshot {fig['procs_sampled_s']:.1f} s after "
            f"incr ({counts[3]} processes with the agents); serve {fig['stats_serve_cpu']:.1f} % "
            f"(with 1 a watcher: {fig['serve_cpu']:.1f} %), agents {fig['stats_agents_cpu']:.1f} %")
        return True

    def scale_top(self, n, endpoint, proc, agents, fig):
        """One `troupe top --controller` in a tmux terminal of its own (200x50): until its header
        shows all n nodes and their processes, then serve's and top's CPU over a window."""
        sock = f"troupe-mesh-{os.getpid()}"
        screen_path = os.path.join(self.workdir, f"top-{n}.txt")
        command = (f"exec {shlex.quote(self.args.troupe)} top --controller {endpoint} "
                   f"2>{shlex.quote(os.path.join(self.workdir, f'top-{n}.err'))}")
        env = dict(self.env, LANG="C.UTF-8", TERM="xterm-256color")

        def tmux(*argv, timeout=10):
            return subprocess.run(["tmux", "-L", sock, *argv], capture_output=True, text=True,
                                  env=env, timeout=timeout, stdin=subprocess.DEVNULL)

        header = re.compile(r"(\d+) nodes \((\d+) stale\)\s+(\d+) processes")
        self.note_load(f"troupe top with {n} agents")
        t0 = time.perf_counter()
        r = tmux("new-session", "-d", "-x", "200", "-y", "50", command)
        if r.returncode != 0:
            raise Failure(f"$ tmux new-session ... {command}\nexit {r.returncode}: {r.stderr}")
        try:
            top_pid = int(tmux("list-panes", "-F", "#{pane_pid}").stdout.split()[0])
            deadline = time.monotonic() + 60
            shown = None
            screen = ""
            while time.monotonic() < deadline:
                screen = tmux("capture-pane", "-p").stdout
                m = header.search(screen)
                if m:
                    shown = tuple(int(g) for g in m.groups())
                    if shown[0] == n and shown[1] == 0 and shown[2] >= fig["procs_total"]:
                        break
                time.sleep(0.2)
            else:
                with open(screen_path, "w") as f:
                    f.write(screen)
                raise Failure(f"$ {command} (in tmux, 200x50): its header did not show {n} nodes, 0 stale, "
                              f"{fig['procs_total']} processes within 60 s; last shown {shown}; screen in "
                              f"{screen_path}:\n" + "\n".join(screen.splitlines()[:6]))
            fig["top_full_s"] = time.perf_counter() - t0
            cpu = self.cpu_groups({"serve": [proc.pid], "top": [top_pid], "agents": [p.pid for p in agents]},
                                  SERVE_WINDOW_S)
            fig["top_serve_cpu"] = cpu["serve"]
            fig["top_cpu"] = cpu["top"]
            fig["top_rss_mb"] = (rss_kb(top_pid) or 0) / 1024
            screen = tmux("capture-pane", "-p").stdout
            m = header.search(screen)
            fig["top_shown"] = [int(g) for g in m.groups()] if m else None
            with open(screen_path, "w") as f:
                f.write(screen)
            log(f"troupe top with {n}: full view {fig['top_full_s']:.1f} s after its start; shows "
                f"{fig['top_shown']} (nodes, stale, processes; serve's snapshot {fig['procs_total']} processes); "
                f"serve {fig['top_serve_cpu']:.1f} %, top {fig['top_cpu']:.1f} %, {fig['top_rss_mb']:.1f} MiB")
        finally:
            tmux("kill-server")

    def scale_dashboard(self, n, bind, proc, client, agents, names, start, fig):
        """Headless chromium on serve's dashboard: page load until all n nodes are rows; serve's
        and the browser's CPU with the page open; until the page shows it: a watcher stopped and
        started on one node, the last agent SIGKILLed, then started again (`start(i)`: all n
        are alive again after)."""
        shot_dir = os.path.join(ROOT, "target", "dashboard-screenshots")
        os.makedirs(shot_dir, exist_ok=True)
        self.note_load(f"dashboard with {n} agents")
        browser = webdriver.Browser(os.path.join(self.workdir, f"chromedriver-{n}.log"), env=self.env)
        try:
            browser.on_new_document(DASHBOARD_OBSERVER_JS.replace("WANT", str(n)))
            browser.goto(f"http://{bind}:5580/")
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                b = browser.execute("return window.__bench;")
                if b and b.get("full") is not None:
                    break
                time.sleep(0.1)
            else:
                text = browser.execute("return document.body.innerText.slice(0, 1500);")
                raise Failure(f"the dashboard at http://{bind}:5580/ did not list {n} alive nodes within 120 s; "
                              f"counted {b and b.get('rows')}; the page reads:\n{text}")
            nav = browser.execute("const e = performance.getEntriesByType('navigation')[0];"
                                  "return [e.domContentLoadedEventEnd, e.loadEventEnd];")
            fig["page_full_ms"] = b["full"]
            fig["page_first_ms"] = b["first"]
            fig["page_dom_ms"] = nav[0]
            time.sleep(SCALE_SETTLE_S)
            browser.execute("window.__bench.longtasks = []; return true;")
            browser.execute(DASHBOARD_TIMERS_JS)
            cpu = self.cpu_groups({"serve": [proc.pid], "browser": browser.pids()}, SERVE_WINDOW_S)
            fig["dash_serve_cpu"] = cpu["serve"]
            fig["dash_browser_cpu"] = cpu["browser"]
            tasks = browser.execute("return window.__bench.longtasks;")
            fig["page_longtasks"] = [len(tasks), sum(tasks) / SERVE_WINDOW_S, max(tasks, default=0)]
            fig["page_js_ms"] = {name: [ms / SERVE_WINDOW_S, calls] for name, (ms, calls) in
                                 browser.execute("return window.__bench.js;").items()}
            fig["page_rows"] = browser.execute(
                "return [document.querySelectorAll('#members tbody tr').length,"
                " document.querySelectorAll('#matrix tbody tr').length,"
                " document.documentElement.scrollHeight];")
            shot = browser.screenshot(os.path.join(shot_dir, f"mesh-{n}.png"))
            # Below both tables: where the charts and the events are drawn.
            fig["page_charts_y"] = browser.execute(
                "const c = document.querySelector('#charts'); c.scrollIntoView();"
                "return c.getBoundingClientRect().top + window.scrollY;")
            browser.screenshot(os.path.join(shot_dir, f"mesh-{n}-charts.png"))
            browser.execute("window.scrollTo(0, 0); return true;")
            log(f"dashboard with {n}: all rows {fig['page_full_ms']:.0f} ms after navigation start (first rows "
                f"{fig['page_first_ms']:.0f} ms, DOMContentLoaded {fig['page_dom_ms']:.0f} ms); serve "
                f"{fig['dash_serve_cpu']:.1f} %, browser {fig['dash_browser_cpu']:.1f} %; long tasks "
                f"{fig['page_longtasks']}; rows {fig['page_rows']}; screenshot {shot}")
            self.save()

            # A watcher action on one node, sent through serve, until the page's matrix shows it.
            node = names[n // 2]
            cell = f'#matrix td[data-node="{node}"][data-watcher="svc"]'
            shown, replied = [], []
            for _ in range(DASH_EVENT_RUNS):
                for action, status in (("stop", "stopped"), ("start", "active")):
                    browser.execute("window.__bench.watch = {css: arguments[0], key: arguments[1], "
                                    "value: arguments[2]}; window.__bench.seen = null; return true;",
                                    cell, "status", status)
                    t0 = time.time() * 1000
                    msg, reply, dt = client.raw(action, {"name": "svc", "node": node}, timeout=30)
                    if reply.get("status") != "ok":
                        raise Failure(f"request {msg}\n-> {json.dumps(reply)[:600]}")
                    replied.append(dt * 1000)
                    seen = self.page_seen(browser, 20, f"{node}'s svc {status} in the matrix")
                    shown.append(seen - t0)
            fig["dash_watcher_ms"] = shown
            fig["dash_watcher_reply_ms"] = replied
            log(f"dashboard with {n}: stop/start svc on {node} -> shown in {fmt_s(shown, 0)} ms "
                f"(serve replied after {fmt_s(replied, 0)} ms)")

            # SIGKILL of one agent until its row reads down, then started again until alive;
            # serve's nodelist polled meanwhile.
            victim = n - 1
            row = f'#members tbody tr[data-node="{names[victim]}"]'
            for key, state in (("down", "down"), ("back", "alive")):
                browser.execute("window.__bench.watch = {css: arguments[0], key: 'state', value: arguments[1]};"
                                "window.__bench.seen = null; return true;", row, state)
                t0 = time.time() * 1000
                if state == "down":
                    agents[victim].kill()
                    agents[victim].wait(timeout=10)
                else:
                    agents[victim] = start(victim)
                at_serve = None
                deadline = time.monotonic() + 60
                while at_serve is None and time.monotonic() < deadline:
                    if (self.states(client) or {}).get(names[victim]) == state:
                        at_serve = time.time() * 1000 - t0
                    time.sleep(0.05)
                seen = self.page_seen(browser, 60, f"{names[victim]} {state} in the node table")
                fig[f"dash_{key}_ms"] = seen - t0
                fig[f"dash_{key}_serve_ms"] = at_serve
                log(f"dashboard with {n}: {names[victim]} {'SIGKILLed' if state == 'down' else 'started again'} -> "
                    f"{state} on the page after {fig[f'dash_{key}_ms']:.0f} ms (serve's nodelist: {at_serve} ms)")
            self.wait_alive(client, names, 60, poll=0.2)
        finally:
            browser.close()

    @staticmethod
    def page_seen(browser, timeout, what):
        """Date.now() in the page when its observer saw the condition set in __bench.watch."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = browser.execute("return window.__bench.seen;")
            if seen is not None:
                return seen
            time.sleep(0.02)
        raise Failure(f"the dashboard did not show {what} within {timeout} s")

    def scale_status(self, n, endpoint, fig, key="status"):
        """`status` to all n through serve, by the CLI and by pyzmq, and the pyzmq floor straight to
        the agents; figures under `key` (`status` at steady state, `status_after` after the
        10-process phase)."""
        self.note_load(f"troupe status to {n} agents through serve ({key})")
        _, out, _, _ = self.troupe("status", "--controller", endpoint, "--timeout", "5s", "--json", timeout=120)
        replies = json.loads(out)
        ok = sum(1 for v in replies.values() if v.get("status") == "ok")
        if ok != n:
            raise Failure(f"$ troupe status --controller {endpoint} --json: {ok} ok replies of {len(replies)}")
        times = []
        failed = []  # per run: nodes whose reply was not ok (the run is timed all the same)
        for _ in range(SCALE_STATUS_RUNS):
            _, out, _, dt = self.troupe("status", "--controller", endpoint, "--timeout", "5s", "--json",
                                        timeout=120, expect=(0, 1))
            times.append(dt * 1000)
            replies = json.loads(out or "{}")
            bad = {k: v for k, v in replies.items() if v.get("status") != "ok"}
            failed.append(len(bad))
            if bad:
                name, reply = next(iter(bad.items()))
                fig[f"{key}_failure_example"] = f"{name}: {json.dumps(reply)[:300]}"
        fig[f"{key}_ms"] = times
        fig[f"{key}_failed"] = failed
        client = Client(self.zmq, endpoint)
        try:
            rts = []
            for _ in range(SCALE_STATUS_RUNS):
                msg, reply, dt = client.raw("status", {"node": "*", "node_timeout": 5.0}, timeout=30)
                nodes = reply.get("nodes") or {}
                got = sum(1 for r in nodes.values() if r.get("status") == "ok")
                if reply.get("status") != "ok" or got != n:
                    raise Failure(f"request {msg}\n-> reply status {reply.get('status')}, {got} ok of {len(nodes)}")
                rts.append(dt * 1000)
            fig[f"{key}_serve_ms"] = rts
        finally:
            client.close()
        fig[f"{key}_direct_ms"] = self.status_direct(n)
        log(f"{key} to {n}: p50 {statistics.median(times):.0f} ms (serve alone "
            f"{statistics.median(rts):.0f} ms, straight to the agents "
            f"{statistics.median(fig[f'{key}_direct_ms']):.0f} ms)")

    def status_direct(self, n):
        """The floor under a fan-out: `status` sent to all n agents at once from kept pyzmq
        DEALERs (no serve, no troupe client), wall ms until the last reply, per run."""
        zmq = self.zmq
        ctx = zmq.Context()
        ctx.set(zmq.MAX_SOCKETS, n + 64)
        socks = []
        try:
            poller = zmq.Poller()
            for i in range(n):
                sock = ctx.socket(zmq.DEALER)
                sock.setsockopt(zmq.LINGER, 0)
                sock.connect(f"tcp://{self.scale_address(i)}:5555")
                poller.register(sock, zmq.POLLIN)
                socks.append(sock)
            times = []
            for run in range(SCALE_STATUS_RUNS + 1):
                rid = f"direct{run}"
                frame = json.dumps({"command": "status", "properties": {}, "id": rid}).encode()
                t0 = time.perf_counter()
                for sock in socks:
                    sock.send(frame)
                waiting = set(range(n))
                index = {sock: i for i, sock in enumerate(socks)}
                deadline = t0 + 30
                while waiting and time.perf_counter() < deadline:
                    for sock, _ in poller.poll(1000):
                        while True:
                            try:
                                reply = json.loads(sock.recv(zmq.NOBLOCK))
                            except zmq.Again:
                                break
                            if reply.get("id") == rid:
                                waiting.discard(index[sock])
                if waiting:
                    raise Failure(f"status straight to the agents: {len(waiting)} of {n} did not answer in 30 s")
                if run:  # the first run connects
                    times.append((time.perf_counter() - t0) * 1000)
            return times
        finally:
            for sock in socks:
                sock.close(0)
            ctx.term()

    def scale_configure(self, n, endpoint, fig, dirs, client, names, agents):
        """The first push changes every agent's peers.txt and restarts its svc (n processes at
        once on this VM's 2 cores: agents too starved to answer heartbeats go `down` for a few
        seconds); each push is followed by waiting until all n are alive again (timed), so the
        next push reaches every node."""
        self.note_load(f"troupe configure to {n} agents through serve")
        fig["configure_recover_s"] = []

        def recover():
            t0 = time.perf_counter()
            self.wait_alive(client, names, 60, poll=0.5)
            fig["configure_recover_s"].append(time.perf_counter() - t0)

        argv = ["configure", "--controller", endpoint, "--timeout", "20s"]
        # Timed even when some node failed (exit 1): how many did is reported beside.
        rc, out, _, dt = self.troupe(*argv, timeout=300, expect=(0, 1))
        fig["configure_rcs"] = [rc]
        if rc != 0:
            fig["configure_failure_example"] = "\n".join(
                line for line in out.splitlines() if "1 file" not in line and "unchanged" not in line)[:600]
        fig["configure_first_ms"] = dt * 1000
        recover()
        for d in (dirs[0], dirs[-1]):
            lines = open(os.path.join(d, "peers.txt")).read().splitlines()
            if len(lines) != n:
                raise Failure(f"$ troupe {shlex.join(argv)}: {d}/peers.txt has {len(lines)} lines, not {n}")
        times = []
        # The floor: the CPU the agents themselves spend taking a push (each parses the whole
        # list and renders its template), spread over this VM's cores.
        fig["configure_floor_ms"] = []
        for _ in range(SCALE_CONFIGURE_RUNS):
            ticks = sum(cpu_ticks(p.pid) for p in agents if p.poll() is None)
            rc, _, _, dt = self.troupe(*argv, timeout=300, expect=(0, 1))
            spent = sum(cpu_ticks(p.pid) for p in agents if p.poll() is None) - ticks
            fig["configure_floor_ms"].append(spent / CLK_TCK / os.cpu_count() * 1000)
            fig["configure_rcs"].append(rc)
            times.append(dt * 1000)
            recover()
        fig["configure_ms"] = times
        log(f"configure to {n}: p50 {statistics.median(times):.0f} ms")

    def scale_kill(self, n, client, agents, names, fig):
        victims = random.Random(15).sample(range(n), SCALE_KILLED)
        self.note_load(f"SIGKILL {SCALE_KILLED} of {n} agents")
        t_kill = time.perf_counter()
        for i in victims:
            agents[i].kill()
        for i in victims:
            agents[i].wait(timeout=10)
        want = {names[i] for i in victims}
        deadline = time.monotonic() + 30
        st = {}
        while time.monotonic() < deadline:
            st = self.states(client) or st
            if all(st.get(name) == "down" for name in want):
                fig["killed_down_s"] = time.perf_counter() - t_kill
                break
            time.sleep(0.05)
        else:
            left = sorted(name for name in want if st.get(name) != "down")
            raise Failure(f"{len(left)} of {SCALE_KILLED} killed agents not down within 30 s: {left[:5]}")
        others = set(names) - want
        fig["others_alive_after_kill"] = sum(1 for name in others if st.get(name) == "alive")
        log(f"{SCALE_KILLED} of {n} killed: all down {fig['killed_down_s']:.2f} s later; "
            f"{fig['others_alive_after_kill']} of {len(others)} others alive")

    def phase_scale(self):
        for n in sorted({FLEET, self.args.agents}):
            self.attempt(f"serve with {n} agents", self.scale_run, n)

    # ---- fan-out to N agents (`--fanout N`) -------------------------------------------------

    @staticmethod
    def fanout_address(i):
        """127.1.x.y for agent i (1-based), 250 to a /24."""
        return f"127.1.{(i - 1) // 250}.{(i - 1) % 250 + 1}"

    def timed_runs(self, key, argv, check, runs=FANOUT_RUNS):
        """`troupe ARGV` `runs` times (after one warm-up whose output `check` reads); wall ms."""
        self.note_load(f"troupe {shlex.join(argv)}")
        _, out, _, _ = self.troupe(*argv, "--json", timeout=120)
        check(out)
        times = []
        agent_pids = [p.pid for p in self.fanout_agents]
        a0 = sum(cpu_ticks(p) for p in agent_pids)
        serve = getattr(self, "fanout_serve", None)
        s0 = cpu_ticks(serve) if serve else 0
        c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        for _ in range(runs):
            _, _, _, dt = self.troupe(*argv, timeout=120)
            times.append(dt * 1000)
        c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        a1 = sum(cpu_ticks(p) for p in agent_pids)
        # CPU seconds per run: the troupe CLI's own, and all agents' together (what the
        # fan-out costs on the far side; here they share the machine's cores with it).
        cli = (c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime) / runs
        agents = (a1 - a0) / CLK_TCK / runs
        served = ((cpu_ticks(serve) - s0) / CLK_TCK / runs) if serve else 0.0
        self.figures[key] = times
        self.figures[key + "_cpu"] = [cli, agents, served]
        log(f"{key}: p50 {statistics.median(times):.0f} ms, max {max(times):.0f} ms; "
            f"CPU per run: CLI {cli:.2f} s, agents {agents:.2f} s, serve {served:.2f} s")

    def all_ok(self, n, what):
        def check(out):
            replies = json.loads(out or "{}")
            ok = sum(1 for r in replies.values() if r.get("status") == "ok")
            if ok != n:
                bad = {k: v for k, v in replies.items() if v.get("status") != "ok"}
                raise Failure(f"{what}: {ok} ok replies of {n}; e.g. {list(bad.items())[:3]}")
        return check

    def phase_fanout(self):
        n = self.args.fanout
        self.figures["fanout_n"] = n
        last = self.fanout_address(n)
        probe = f"127.1.0.1-{last}"
        template = os.path.join(self.workdir, "peers.j2")
        with open(template, "w") as f:
            f.write("{% for p in peers %}{{ p.index }}={{ p.name }}@{{ p.address }}\n{% endfor %}")
        self.note_load(f"starting {n} agents")
        agents = []
        t0 = time.perf_counter()
        for i in range(1, n + 1):
            name = f"a{i:04d}"
            d = os.path.join(self.workdir, name)
            watchers = (f'[watcher.svc]\ncmd = "sleep 1000"\ngraceful_timeout = 1\n'
                        f'[[watcher.svc.template]]\nsource = "{template}"\ndest = "{d}/peers.txt"\n')
            agents.append(self.start_agent(name, self.fanout_address(i), "bm-fan", watchers=watchers))
        self.fanout_agents = agents
        state = os.path.join(self.workdir, "cli-state")
        cli = ["--probe", probe, "--no-mdns", "--cluster", "bm-fan", "--state-dir", state,
               "--controller", "tcp://127.0.0.1:1", "--timeout", "10s"]
        deadline = time.monotonic() + 120
        found = 0
        while time.monotonic() < deadline:
            dead = [i for i, p in enumerate(agents) if p.poll() is not None]
            if dead:
                raise Failure(f"agents exited: {dead[:5]} (logs in {self.workdir})")
            _, out, _, _ = self.troupe("numwatchers", *cli, "--json", timeout=120, expect=(0, 1, 3))
            found = sum(1 for r in json.loads(out or "{}").values() if r.get("status") == "ok")
            if found == n:
                break
            time.sleep(1)
        if found != n:
            raise Failure(f"only {found} of {n} agents answer a probe of {probe}")
        self.figures["fanout_up_s"] = time.perf_counter() - t0
        log(f"{n} agents answer ({self.figures['fanout_up_s']:.1f} s)")
        self.attempt("status --probe", self.timed_runs, "fanout_cli_status_ms", ["status", *cli],
                     self.all_ok(n, "status --probe"))
        self.attempt("configure --probe", self.timed_runs, "fanout_cli_configure_ms", ["configure", *cli],
                     self.all_ok(n, "configure --probe"))
        try:
            self.attempt(f"serve with {n} members", self.fanout_through_serve, n, probe)
        finally:
            self.stop(agents, timeout=60)

    def fanout_through_serve(self, n, probe):
        names = [f"a{i:04d}" for i in range(1, n + 1)]
        proc, client, t0 = self.start_serve("serve-fanout", "127.0.0.250", "--no-mdns", "--cluster", "bm-fan",
                                            "--probe", probe)
        endpoint = "tcp://127.0.0.250:5558"
        via = ["--controller", endpoint, "--timeout", "10s"]
        self.fanout_serve = proc.pid
        try:
            t1 = self.wait_alive(client, names, 120, poll=0.2)
            self.figures["fanout_alive_s"] = t1 - t0
            self.attempt("status --controller", self.timed_runs, "fanout_status_ms", ["status", *via],
                         self.all_ok(n, "status --controller"))
            # The files differ from the CLI's push only if membership differs: first push timed.
            self.note_load("troupe configure --controller, first")
            _, _, _, dt = self.troupe("configure", *via, timeout=120)
            self.figures["fanout_configure_first_ms"] = dt * 1000
            for d in (os.path.join(self.workdir, names[0]), os.path.join(self.workdir, names[-1])):
                lines = open(os.path.join(d, "peers.txt")).read().splitlines()
                if len(lines) != n:
                    raise Failure(f"{d}/peers.txt has {len(lines)} lines, not {n}")
            self.attempt("configure --controller", self.timed_runs, "fanout_configure_ms",
                         ["configure", *via], self.all_ok(n, "configure --controller"))
        finally:
            client.close()
            self.fanout_serve = None
            self.stop([proc])

    def phase_main(self):
        self.attempt("probing discovery and SIGKILL -> down", self.probe_and_down)
        self.attempt("/24 probe", self.probe24)
        try:
            self.attempt(f"starting {FLEET} agents", self.fleet_start)
            if self.figures.get("probe_fleet_found") == FLEET:
                self.attempt(f"serve with {FLEET} members", self.fleet_membership)
                self.attempt("broadcast to 32", self.fleet_broadcast, 32, True)
                self.attempt("broadcast to 128", self.fleet_broadcast, 128)
                self.attempt("configure to 100", self.fleet_configure)
        finally:
            log(f"stopping the {FLEET} agents")
            self.stop(getattr(self, "fleet", []), timeout=30)
        self.attempt("etcd", self.etcd)
        self.attempt("troupe-agent stats", self.agent_stats)
        self.attempt("circusd-stats", self.circus_stats)

    def phase_simulated(self):
        self.attempt(f"serve with {self.args.simulated} simulated members", mesh_swarm.run, self,
                     self.args.simulated, Failure, log, status_kb)

    def main(self):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.nofile_soft = min(soft, 1024)  # what a login shell usually gives serve
        if soft < 65536 and hard > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
        try:
            {"mdns-lo": self.phase_mdns_lo, "mdns-bridge": self.phase_mdns_bridge,
             "main": self.phase_main, "simulated": self.phase_simulated,
             "scale": self.phase_scale, "fanout": self.phase_fanout}[self.args.inner]()
        finally:
            self.stop_all()
            kill_namespace_except_self()
            self.save()
        if self.failures:
            log(f"logs kept in {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return 1 if self.failures else 0


def inner(args):
    if not args.outer_netns or own_netns() == args.outer_netns:
        sys.exit("mesh.py --inner: still in the root network namespace; refusing to run")
    run = Inner(args)
    try:
        return run.main()
    except KeyboardInterrupt:
        log("interrupted")
        return 130


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--inner", choices=sorted(PHASE_TIMEOUTS), help=argparse.SUPPRESS)
    p.add_argument("--outer-netns", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--agent-netns", help=argparse.SUPPRESS)
    p.add_argument("--agent", default=os.path.join(ROOT, "target/release/troupe-agent"))
    p.add_argument("--troupe", default=os.path.join(ROOT, "target/release/troupe"))
    p.add_argument("--circusd", default=os.path.join(ROOT, ".venv-circus/bin/circusd"))
    p.add_argument("--swarm", default=os.path.join(ROOT, "target/release/troupe-swarm"))
    p.add_argument("--simulated", type=int, metavar="N",
                   help="only the simulated phase: one serve and N agents of troupe-swarm (bench/mesh_swarm.py)")
    p.add_argument("--agents", type=int, metavar="N",
                   help=f"only one serve with {FLEET} real agents, then with N, side by side")
    p.add_argument("--fanout", type=int, metavar="N",
                   help="only the fan-out figures: status and configure to N agents (CLI and serve)")
    args = p.parse_args()
    if args.inner:
        def interrupt(signum, frame):
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            raise KeyboardInterrupt()

        signal.signal(signal.SIGINT, interrupt)
        signal.signal(signal.SIGTERM, interrupt)
        sys.exit(inner(args))
    sys.exit(outer(args))


if __name__ == "__main__":
    main()
