"""`bench/run mesh --simulated N`: one `troupe serve` against N simulated agents (troupe-swarm).

The phase `simulated` of bench/mesh.py, run inside a namespace of its own (lo only). The swarm
puts agent i on 127.1.0.1 + i (ports 5555-5557, stats every second: one watcher of two
processes each, 5 messages a round); serve probes that range (probe_interval 1 s, mDNS off).

Figures: serve start -> all N alive (or the most ever alive when it never gets there); serve's
and the swarm's CPU and RSS at steady state; `troupe status --controller` to all N, p50/p99;
churn at CHURN_RATE leaves and CHURN_RATE joins a second for CHURN_S: every leave seen `down`
(node.<name>.down on serve's events socket) and every join seen `alive` again (node.<name>.join
or .update with state alive, or alive in the nodelist at the end when serve never saw the node
gone), with the delays' p50/p99/max.
"""

import json
import os
import resource
import statistics
import subprocess
import threading
import time

SERVE_BIND = "127.0.0.1"
MAX_MEMBERS = 1024  # troupe::bounds::MAX_MEMBERS: serve's default member bound
CONVERGE_TIMEOUT_S = 180.0
STEADY_SETTLE_S = 5.0
STEADY_WINDOW_S = 20.0
STATUS_RUNS = 10
CHURN_S = 30.0
CHURN_GRACE_S = 15.0
TARGET_SIMULATED_CPU = 60.0  # % of one core, serve with 5000 simulated members
# serve's own check at start of the descriptors `--max-members N` takes (troupe::bounds):
SERVE_FILES_PER_MEMBER = 8  # SERVE_FILES_PER_MEMBER (no cluster key)
SERVE_FILES_BESIDES_MEMBERS = 1024  # SERVE_FILES_BESIDES_MEMBERS
# Where N members cannot run here, serve's steady CPU is measured at these fractions of the
# most that can, besides the whole phase at that most, and a line through them extrapolated.
LADDER = (0.5, 0.75)


def serve_files_for(n):
    """The descriptors serve makes sure it may open for `--max-members n`."""
    return n * SERVE_FILES_PER_MEMBER + SERVE_FILES_BESIDES_MEMBERS


def members_that_fit(hard_limit):
    """The most members serve holds under a hard descriptor limit (at least its default bound,
    which it takes without the check)."""
    return max(MAX_MEMBERS, (hard_limit - SERVE_FILES_BESIDES_MEMBERS) // SERVE_FILES_PER_MEMBER)


def line_through(points):
    """Least squares (slope, intercept) of [(x, y)]."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    slope = sum((x - mx) * (y - my) for x, y in points) / sxx
    return slope, my - slope * mx


def churn_rate(n):
    """Leaves (and joins) a second: 1 % of the members, at least 1."""
    return max(1.0, n / 100.0)


def raise_fd_limit(wanted):
    """Serve and the swarm inherit it: about ten descriptors per member each. Returns the
    (soft, hard) limit now: the hard limit is raised only where the kernel lets root do it
    (CAP_SYS_RESOURCE; containers often drop it), else the soft one goes up to it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(hard, wanted)))
        except (ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


class SwarmOutput:
    """Reads the swarm's JSON lines on a thread: the ready line, leaves and joins with times."""

    def __init__(self, proc):
        self.proc = proc
        self.ready = None
        self.leaves = []  # (name, epoch)
        self.joins = []
        self.tallies = []
        self.addresses = {}  # name -> address of its last join
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.read, daemon=True)
        self.thread.start()

    def read(self):
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            with self.lock:
                kind = event.get("event")
                if kind == "ready":
                    self.ready = event
                elif kind == "leave":
                    self.leaves.append((event["name"], event["time"]))
                elif kind == "join":
                    self.joins.append((event["name"], event["time"]))
                    self.addresses[event["name"]] = event["address"]
                elif kind == "tally":
                    self.tallies.append(event)

    def wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready is not None:
                return self.ready
            if self.proc.poll() is not None:
                return None
            time.sleep(0.05)
        return None


class MemberEvents:
    """node.* events of serve's events socket, with their arrival times (epoch)."""

    def __init__(self, zmq, endpoint):
        self.sub = zmq.Context.instance().socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.RCVHWM, 0)
        self.sub.connect(endpoint)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"node.")
        self.events = []  # (name, kind, state, epoch)
        self.stop = False
        self.thread = threading.Thread(target=self.read, daemon=True)
        self.thread.start()

    def read(self):
        while not self.stop:
            if not self.sub.poll(200):
                continue
            while True:
                try:
                    topic, body = self.sub.recv_multipart(flags=1)  # NOBLOCK
                except Exception:
                    break
                now = time.time()
                parts = topic.decode(errors="replace").split(".")
                if len(parts) < 3:
                    continue
                try:
                    state = json.loads(body).get("state")
                except ValueError:
                    state = None
                self.events.append((".".join(parts[1:-1]), parts[-1], state, now))

    def close(self):
        self.stop = True
        self.thread.join(timeout=2)
        self.sub.close(0)


def delays(changes, events, wanted, until=None):
    """For each (name, epoch) change, the delay to the first event after it that `wanted`
    accepts, and before `until(name, epoch)` if given (the node's next change); returns
    (delays, names never seen)."""
    by_name = {}
    for name, kind, state, at in events:
        by_name.setdefault(name, []).append((at, kind, state))
    found, missing = [], []
    for name, t in changes:
        end = until(name, t) if until else float("inf")
        hit = next((at for at, kind, state in by_name.get(name, [])
                    if t <= at < end and wanted(kind, state)), None)
        if hit is None:
            missing.append(name)
        else:
            found.append(hit - t)
    return found, missing


def swarm_round_trips(zmq, first_address, count, result):
    """A `during` callback: `nodeinfo` straight to `count` simulated agents (a kept DEALER each),
    a round every 250 ms until the deadline: how fast the swarm itself answers under the same
    load, so that a slow swarm is not taken for a slow serve. Fills result["ms"]."""
    import ipaddress
    first = int(ipaddress.IPv4Address(first_address))
    ctx = zmq.Context.instance()
    dealers = []
    for i in range(count):
        d = ctx.socket(zmq.DEALER)
        d.setsockopt(zmq.LINGER, 0)
        d.connect(f"tcp://{ipaddress.IPv4Address(first + i)}:5555")
        dealers.append(d)

    def during(deadline):
        seq = 0
        times, lost = [], 0
        while time.monotonic() < deadline:
            for d in dealers:
                seq += 1
                t0 = time.perf_counter()
                d.send(json.dumps({"command": "nodeinfo", "properties": {}, "id": str(seq)}).encode())
                got = None
                while d.poll(2000):
                    reply = json.loads(d.recv())
                    if reply.get("id") == str(seq):
                        got = time.perf_counter() - t0
                        break
                if got is None:
                    lost += 1
                else:
                    times.append(got * 1000)
            time.sleep(0.25)
        for d in dealers:
            d.close(0)
        result["ms"], result["lost"] = times, lost

    return during


def pct(values, p):
    values = sorted(values)
    if not values:
        return None
    k = max(0, min(len(values) - 1, int(round(p / 100.0 * len(values) + 0.5)) - 1))
    return values[k]


def ask_directly(inner, out, names):
    """`nodeinfo` straight to nodes serve does not see alive, and which of their ports listen:
    a swarm node that did not come back (serve rightly has it down) is told from one that
    answers and that serve does not hear. Returns ({name: finding}, names that answer)."""
    from compare import CallError, Client

    listening = set()
    for line in subprocess.run(["ss", "-Htln"], capture_output=True, text=True).stdout.splitlines():
        fields = line.split()
        if len(fields) >= 4:
            listening.add(fields[3])
    findings, answering = {}, []
    for name in names:
        with out.lock:
            address = out.addresses.get(name)
        ports = [p for p in (5555, 5556, 5557) if f"{address}:{p}" in listening]
        client = Client(inner.zmq, f"tcp://{address}:5555")
        try:
            client.call("nodeinfo", timeout=2)
            findings[name] = "answers nodeinfo"
            answering.append(name)
        except CallError:
            findings[name] = f"no nodeinfo reply within 2 s; of its ports 5555-5557 listening: {ports or 'none'}"
        finally:
            client.close()
    return findings, answering


def start_serve(inner, config, probe, Failure, extra=(), tag="serve-sim"):
    """mesh.py's start_serve, waiting longer for the first answer: a `nodelist` waits for the
    first sweep (up to 5 s, troupe::bounds::SERVE_FIRST_DISCOVERY_WAIT), which thousands of
    members make slow."""
    from compare import CallError, Client

    state = os.path.join(inner.workdir, f"{tag}-state")
    argv = [inner.args.troupe, "serve", "--bind", SERVE_BIND, "--port", "5558", "--stats-port", "5559",
            "--events-port", "5560", "--state-dir", state, "--log-level", "info", "--no-mdns",
            "--config", config, "--probe", probe, *extra]
    t0 = time.perf_counter()
    proc = inner.spawn(f"troupe {tag}", argv, f"{tag}.log")
    deadline = time.monotonic() + 60
    last = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise Failure(f"$ {' '.join(argv)}\nexited with {proc.returncode} (log in {inner.workdir})")
        client = Client(inner.zmq, f"tcp://{SERVE_BIND}:5558")
        try:
            client.call("nodelist", timeout=8)
            return proc, client, t0
        except CallError as e:
            last = e
            client.close()
        time.sleep(0.2)
    raise Failure(f"$ {' '.join(argv)}\nno answer to nodelist within 60 s: {last}")


def start_swarm(inner, n, Failure, log, tag):
    """N simulated agents (churn ready on SIGUSR1) and serve probing them; returns
    (swarm, its output, its ready line, serve, a client of serve, serve's start time)."""
    swarm_argv = [inner.args.swarm, "--agents", str(n), "--churn", str(churn_rate(n)),
                  "--churn-after", "signal", "--report-every", "5s"]
    log(f"starting {n} simulated agents: {' '.join(swarm_argv)}")
    logf = open(os.path.join(inner.workdir, f"swarm-{tag}.log"), "ab")
    swarm = subprocess.Popen(swarm_argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=logf,
                             text=True, start_new_session=True, cwd=inner.workdir, env=inner.env)
    logf.close()
    inner.procs.append(("troupe-swarm", swarm))
    out = SwarmOutput(swarm)
    ready = out.wait_ready(120)
    if ready is None:
        raise Failure(f"$ {' '.join(swarm_argv)}\nno ready line within 120 s (exit {swarm.poll()}; "
                      f"log in {inner.workdir}/swarm-{tag}.log)")
    config = os.path.join(inner.workdir, "serve-sim.toml")
    with open(config, "w") as f:
        f.write('cluster = "default"\nprobe_interval = "1s"\nmdns = false\n')
    inner.note_load(f"serve start -> {n} simulated members alive")
    # Past troupe::bounds::MAX_MEMBERS, serve is told to hold them all (and checks at start
    # that it may open the descriptors they take).
    extra = ["--max-members", str(n)] if n > MAX_MEMBERS else []
    try:
        proc, client, t0 = start_serve(inner, config, ready["probe"], Failure, extra, tag)
    except Failure:
        inner.stop([swarm], timeout=30)
        raise
    return swarm, out, ready, proc, client, t0


def converge(inner, n, proc, swarm, client, Failure):
    """Waits until all n are alive: (the most seen alive, perf_counter() then or None, the
    states' counts at the end)."""
    best, alive_at, counts = 0, None, {}
    deadline = time.monotonic() + CONVERGE_TIMEOUT_S
    while time.monotonic() < deadline:
        st = inner.states(client)
        if st is not None:
            counts = {}
            for state in st.values():
                counts[state] = counts.get(state, 0) + 1
            alive = counts.get("alive", 0)
            best = max(best, alive)
            if alive >= n:
                alive_at = time.perf_counter()
                break
        if proc.poll() is not None:
            raise Failure(f"troupe serve exited with {proc.returncode} (log in {inner.workdir})")
        if swarm.poll() is not None:
            raise Failure(f"troupe-swarm exited with {swarm.returncode} (log in {inner.workdir})")
        time.sleep(1.0)
    return best, alive_at, counts


def steady_cpu(inner, n, Failure, log, status_kb):
    """One rung of the ladder: serve's steady CPU (and RSS) with n simulated members, nothing
    else measured."""
    swarm, _out, ready, proc, client, t0 = start_swarm(inner, n, Failure, log, f"serve-sim-{n}")
    try:
        best, alive_at, counts = converge(inner, n, proc, swarm, client, Failure)
        if alive_at is None:
            raise Failure(f"not all {n} alive within {CONVERGE_TIMEOUT_S:g} s: at most {best}; {counts}")
        time.sleep(STEADY_SETTLE_S)
        inner.note_load(f"steady state, {n} simulated members (a rung of the ladder)")
        swarm_pids = [swarm.pid, *ready.get("shards", [])]
        cpu = inner.cpu_groups({"serve": [proc.pid], "swarm": swarm_pids}, STEADY_WINDOW_S)
        after = inner.states(client) or {}
        rung = {"n": n, "serve_cpu": cpu["serve"], "swarm_cpu": cpu["swarm"],
                "alive_s": alive_at - t0,
                "alive_after": sum(1 for s in after.values() if s == "alive"),
                "rss_mb": (status_kb(proc.pid, "VmRSS") or 0) / 1024}
        log(f"rung {n}: serve {cpu['serve']:.1f} % of a core, alive after {rung['alive_after']}")
        return rung
    finally:
        client.close()
        inner.stop([proc, swarm], timeout=30)


def run(inner, n, Failure, log, status_kb):
    """The phase: fills inner.figures with sim_* keys. `Failure`, `log` and `status_kb` are
    mesh.py's (run as a script, it is not importable as `mesh` without a second copy)."""
    fig = inner.figures
    fig["sim_fd_limit"] = raise_fd_limit(max(65536, 16 * n + 4096))
    fit = members_that_fit(fig["sim_fd_limit"][1])
    if n > fit:
        # Not a failure of troupe's: the figure asked for cannot be had on this machine. What
        # can is measured, and the line through it extended, said to be extrapolated.
        rungs = [int(fit * f) for f in LADDER]
        log(f"{n} simulated members cannot run here: serve takes {serve_files_for(n)} descriptors "
            f"for them ({SERVE_FILES_PER_MEMBER} a member), and this process's hard limit is "
            f"{fig['sim_fd_limit'][1]} (raising it takes CAP_SYS_RESOURCE); measuring serve's "
            f"steady CPU at {rungs} and everything at {fit}, the most that fit")
        fig["sim_wanted"] = n
        fig["sim_ladder"] = [steady_cpu(inner, m, Failure, log, status_kb) for m in rungs]
        inner.save()
        n = fit
    fig["sim_n"] = n
    swarm, out, ready, proc, client, t0 = start_swarm(inner, n, Failure, log, "serve-sim")
    fig["sim_bind_s"] = ready["bind_seconds"]
    probe = ready["probe"]
    # start_serve logs at info: one line per member event is fine at this scale.
    events = MemberEvents(inner.zmq, f"tcp://{SERVE_BIND}:5560")
    endpoint = f"tcp://{SERVE_BIND}:5558"
    try:
        best, alive_at, counts = converge(inner, n, proc, swarm, client, Failure)
        fig["sim_alive_best"] = best
        fig["sim_states_at_converge"] = counts
        if alive_at is not None:
            fig["sim_alive_s"] = alive_at - t0
            log(f"{n} simulated members alive {alive_at - t0:.1f} s after serve started")
        else:
            inner.fail(f"serve with {n} simulated members",
                       f"not all alive within {CONVERGE_TIMEOUT_S:g} s: at most {best} alive; "
                       f"states at the end {counts}")
        inner.save()

        time.sleep(STEADY_SETTLE_S)
        inner.note_load(f"steady state, {n} simulated members")
        before = inner.states(client) or {}
        # A swarm past one process's descriptors runs shard processes: their CPU is its own.
        swarm_pids = [swarm.pid, *ready.get("shards", [])]
        fig["sim_swarm_processes"] = len(swarm_pids)
        rtt = {}
        during = swarm_round_trips(inner.zmq, probe.split("-")[0], min(20, n), rtt)
        cpu = inner.cpu_groups({"serve": [proc.pid], "swarm": swarm_pids}, STEADY_WINDOW_S, during)
        fig["sim_swarm_rtt_ms"] = rtt.get("ms", [])
        fig["sim_swarm_rtt_lost"] = rtt.get("lost", 0)
        after = inner.states(client) or {}
        fig["sim_serve_cpu"] = cpu["serve"]
        fig["sim_swarm_cpu"] = cpu["swarm"]
        fig["sim_alive_steady"] = [sum(1 for s in before.values() if s == "alive"),
                                   sum(1 for s in after.values() if s == "alive")]
        fig["sim_serve_rss_mb"] = (status_kb(proc.pid, "VmRSS") or 0) / 1024
        fig["sim_serve_hwm_mb"] = (status_kb(proc.pid, "VmHWM") or 0) / 1024
        fig["sim_swarm_rss_mb"] = sum(status_kb(p, "VmRSS") or 0 for p in swarm_pids) / 1024
        flaps = sum(1 for _, kind, _, _ in events.events if kind in ("suspect", "down"))
        fig["sim_flaps_before_churn"] = flaps
        log(f"steady: serve {cpu['serve']:.1f} %, swarm {cpu['swarm']:.1f} % of a core; "
            f"serve RSS {fig['sim_serve_rss_mb']:.1f} MiB; alive {fig['sim_alive_steady']}")
        inner.save()

        inner.note_load(f"troupe status --controller to {n} simulated members")
        times, failed = [], []
        for _ in range(STATUS_RUNS):
            rc, stdout, stderr, dt = inner.troupe("status", "--controller", endpoint, "--timeout", "10s",
                                                  timeout=120, expect=None)
            times.append(dt * 1000)
            rows = sum(1 for line in stdout.splitlines() if line.startswith("sim-"))
            if rc != 0 or rows < best:
                failed.append(f"exit {rc}, {rows} rows; stderr {stderr[-300:]!r}")
        fig["sim_status_ms"] = times
        fig["sim_status_failed"] = failed
        log(f"status to {n}: p50 {statistics.median(times):.0f} ms")
        inner.save()

        inner.note_load(f"churn: {churn_rate(n):g} leaves and joins a second for {CHURN_S:g} s")
        churn_from = time.time()
        swarm.send_signal(10)  # SIGUSR1: churn starts
        time.sleep(CHURN_S)
        swarm.send_signal(10)  # and stops
        churn_to = time.time()
        time.sleep(CHURN_GRACE_S)
        with out.lock:
            leaves = [(a, t) for a, t in out.leaves if churn_from <= t <= churn_to]
            joins = [(a, t) for a, t in out.joins if churn_from <= t <= churn_to]
        # A leave is reflected when its member is seen down (or suspect first) after it; a
        # join when it is alive again. An agent that left and joined before serve noticed
        # counts as neither missed: its leave is checked against its next join.
        next_join = {}
        for name, t in sorted(joins, key=lambda x: x[1]):
            next_join.setdefault(name, []).append(t)
        leaves_checked = [(a, t) for a, t in leaves
                          if not any(t < j < t + 3.0 for j in next_join.get(a, []))]
        down, down_missing = delays(leaves_checked, events.events,
                                    lambda kind, state: kind == "down" or state == "down")
        # Delays only for the figures, each up to the node's next leave: a join followed by a
        # leave before the next heartbeat is never seen alive, rightly.
        with out.lock:
            all_leaves = sorted(out.leaves, key=lambda x: x[1])

        def next_leave(name, t):
            return next((l for a, l in all_leaves if a == name and l > t), float("inf"))

        back, _ = delays(joins, events.events,
                         lambda kind, state: state == "alive" and kind != "suspect", next_leave)
        final = inner.states(client) or {}
        # After the grace, serve must show every node as it is: up (its last line a join, or
        # never churned) `alive`, gone (its last line a leave) not `alive`. A node that
        # restarted before serve saw it gone has no event of its own: the end state judges it.
        last_leave, last_join = {}, {}
        with out.lock:
            for name, t in out.leaves:
                last_leave[name] = max(t, last_leave.get(name, 0))
            for name, t in out.joins:
                last_join[name] = max(t, last_join.get(name, 0))
        back_missing = sorted(a for a, t in last_join.items()
                              if t > last_leave.get(a, 0) and final.get(a) != "alive")
        gone_alive = sorted(a for a, t in last_leave.items()
                            if t >= last_join.get(a, 0) and final.get(a) == "alive")
        fig["sim_churn"] = {"rate": churn_rate(n), "seconds": CHURN_S, "leaves": len(leaves),
                            "joins": len(joins), "leaves_checked": len(leaves_checked),
                            "down": down, "down_missing": down_missing[:20],
                            "down_missing_n": len(down_missing),
                            "back": back, "back_missing": back_missing[:20],
                            "back_missing_n": len(back_missing), "gone_alive": gone_alive[:20],
                            "gone_alive_n": len(gone_alive)}
        fig["sim_states_end"] = {s: sum(1 for v in final.values() if v == s) for s in set(final.values())}
        findings, answering = ask_directly(inner, out, back_missing)
        fig["sim_churn"]["back_missing_direct"] = dict(list(findings.items())[:20])
        fig["sim_churn"]["back_missing_answering_n"] = len(answering)
        if back_missing or down_missing or gone_alive:
            inner.fail("churn not reflected",
                       f"{len(down_missing)} leaves never seen down (e.g. {down_missing[:5]}), "
                       f"{len(gone_alive)} nodes gone at the end and still alive (e.g. {gone_alive[:5]}), "
                       f"{len(back_missing)} nodes up again since their last join and not alive 15 s "
                       f"after churn stopped (e.g. {[(a, final.get(a)) for a in back_missing[:5]]}); "
                       f"of these, asked directly, {len(answering)} answer (serve's fault) and "
                       f"{len(back_missing) - len(answering)} do not (the swarm's: serve rightly has "
                       f"them down): {dict(list(findings.items())[:5])}; "
                       f"serve's log and the swarm's lines are kept")
        log(f"churn: {len(leaves)} leaves ({len(down)} seen down), {len(joins)} joins "
            f"({len(back)} seen alive again)")
        inner.save()
    finally:
        events.close()
        client.close()
        inner.stop([proc, swarm], timeout=30)


def report(fig, row):
    """Rows for mesh.py's report()."""
    if "sim_n" not in fig:
        return
    n = fig["sim_n"]
    S = f"Simulated members (troupe-swarm, {n} agents)"
    if "sim_alive_s" in fig:
        row(S, f"serve start -> {n} simulated members alive", f"{fig['sim_alive_s']:.2f} s "
            f"(swarm bound its {3 * n} sockets in {fig.get('sim_bind_s', 0):.2f} s)")
    else:
        row(S, f"serve start -> {n} simulated members alive",
            f"never: at most {fig.get('sim_alive_best', '?')} alive; {fig.get('sim_states_at_converge')}")
    if "sim_serve_cpu" in fig:
        # The target is for a converged serve: one whose members went down costs less.
        converged = "sim_alive_s" in fig
        ok = fig["sim_serve_cpu"] <= TARGET_SIMULATED_CPU and converged if n >= 5000 else None
        row(S, "serve CPU at steady state", f"{fig['sim_serve_cpu']:.1f} % of a core "
            f"(alive before/after {fig.get('sim_alive_steady')}; {fig.get('sim_flaps_before_churn', 0)} "
            f"suspect/down events so far)", f"<= {TARGET_SIMULATED_CPU:g} % at 5000", ok)
        row(S, "serve RSS (VmRSS / VmHWM)",
            f"{fig['sim_serve_rss_mb']:.1f} / {fig['sim_serve_hwm_mb']:.1f} MiB")
        row(S, "  the swarm itself: CPU, RSS",
            f"{fig['sim_swarm_cpu']:.1f} % of a core, {fig['sim_swarm_rss_mb']:.1f} MiB "
            f"({fig.get('sim_swarm_processes', 1)} processes; open files limit {fig.get('sim_fd_limit')})")
    ladder = fig.get("sim_ladder")
    if ladder is not None:
        report_ladder(fig, n, ladder, row, S)
    r = fig.get("sim_swarm_rtt_ms")
    if r:
        row(S, "  the swarm's own nodeinfo round trip (20 agents asked directly), p50 / p99 / max",
            f"{statistics.median(r):.2f} / {pct(r, 99):.2f} / {max(r):.2f} ms ({len(r)} asked, "
            f"{fig.get('sim_swarm_rtt_lost', 0)} unanswered within 2 s)")
    v = fig.get("sim_status_ms")
    if v:
        failed = fig.get("sim_status_failed") or []
        row(S, f"troupe status --controller to all, p50 / p99 ({len(v)} runs)",
            f"{statistics.median(v):.0f} / {pct(v, 99):.0f} ms"
            + (f"; {len(failed)} runs short or failed: {failed[0]}" if failed else ""))
    c = fig.get("sim_churn")
    if c:
        def spread(values):
            if not values:
                return "none"
            return f"p50 {statistics.median(values):.2f} s, p99 {pct(values, 99):.2f} s, max {max(values):.2f} s"
        row(S, f"churn {c['rate']:g}/s leaves and joins for {c['seconds']:g} s: leave -> down",
            f"{len(c['down'])} of {c['leaves_checked']} seen down ({spread(c['down'])})"
            + (f"; never: {c['down_missing_n']} e.g. {c['down_missing'][:3]}" if c["down_missing_n"] else ""))
        row(S, "  join (the node restarted) -> alive again",
            f"{c['joins']} joins: {len(c['back'])} seen alive again by an event ({spread(c['back'])}), "
            f"the others restarted before serve saw them gone, or gone again before serve asked; "
            f"at the end every node up alive, every node gone not"
            + (f"; up and not alive: {c['back_missing_n']} e.g. {c['back_missing'][:3]}" if c["back_missing_n"] else "")
            + (f"; gone and alive: {c['gone_alive_n']} e.g. {c['gone_alive'][:3]}" if c.get("gone_alive_n") else ""))
        row(S, "  states at the end", json.dumps(fig.get("sim_states_end")))


def report_ladder(fig, n, ladder, row, S):
    """Rows for a run whose N members could not be held here: the rungs measured, and serve's
    CPU at N on the line through them and the whole phase at n, labelled as extrapolated."""
    wanted = fig["sim_wanted"]
    row(S, f"{wanted} simulated members",
        f"cannot run here: serve takes {serve_files_for(wanted)} descriptors for them, this "
        f"machine's hard limit is {fig['sim_fd_limit'][1]}; measured at {n} (the most that fit) "
        f"and below")
    points = [(r["n"], r["serve_cpu"]) for r in ladder]
    for r in ladder:
        row(S, f"  serve steady CPU at {r['n']}",
            f"{r['serve_cpu']:.1f} % of a core (all alive after {r['alive_s']:.1f} s, "
            f"{r['alive_after']} alive at the window's end; RSS {r['rss_mb']:.1f} MiB)")
    if "sim_serve_cpu" in fig and "sim_alive_s" in fig:
        points.append((n, fig["sim_serve_cpu"]))
    if len(points) >= 2:
        slope, intercept = line_through(points)
        top_n, top_cpu = max(points)
        row(S, f"serve CPU at {wanted}, extrapolated (not measured)",
            f"{slope * wanted + intercept:.1f} % of a core on the line through the {len(points)} "
            f"figures above ({slope * 1000:.2f} % a thousand members {intercept:+.1f} %); "
            f"{top_cpu * wanted / top_n:.1f} % in proportion to the {top_n}-member figure",
            f"<= {TARGET_SIMULATED_CPU:g} % at 5000")
