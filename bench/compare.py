#!/usr/bin/env python3
"""troupe-agent vs circusd 0.19, side by side.

Run through `bench/run` (as root, with the venv's python: stdlib + pyzmq only).

The script creates a network namespace of its own (`trb-<pid>`, only `lo`, up), because
circusd joins a multicast group at start and must never do that in the root namespace
(docs: shared/design/TESTING.md section 3). It then re-executes itself inside that namespace
(`ip netns exec NS python compare.py --inner ...`); the inner part starts each daemon in turn
on 127.0.0.1 (troupe-agent on 5555-5557, circusd on 6555-6557), measures it with a pyzmq
DEALER, and stops it. Whatever happens (error, Ctrl-C, SIGTERM), the outer part finally kills
every process left in the namespace and deletes it.

Figures, per daemon, with 10 watchers x 10 `sleep` processes configured:
  1. `status` round trip p50/p99 over 2000 sequential requests on one DEALER (after 200 warm-up)
  2. time from sending `start` (waiting=true) of an added 200-process `sleep` watcher until
     `list <name>` shows 200 pids (median of 3 runs; add/stop/rm are outside the timing)
  3. RSS (VmRSS) of the daemon with the 100 processes running (circus: circusd + circusd-stats)
  4. crash-to-respawn: kill -9 one process, poll `list` every 1 ms until a new pid appears;
     median over 10 kills, each after a random 0-5 s pause (circusd reaps every check_delay =
     5 s: without the pause every kill would land right after a tick, its worst case)
  5. troupe-agent only: peak RSS over 5 s while one more watcher (`yes`, started then, stopped
     after) prints as fast as it can, its output kept in the in-memory ring at the default
     bound (`log_ring_bytes`, 1 MiB), and how many lines a second the ring took in. Target:
     at most the 10 x 10 RSS + 2 MiB (the ring's MiB, its queues and the pipe buffers)
Also, for scale: the same `status` loop against a minimal pyzmq ROUTER that answers at once
(the floor set by the Python client and loopback ZeroMQ), and 200 `sleep` started by a bare
os.posix_spawn loop (the floor set by this machine's fork/exec).

CURVE (issue 12): troupe-agent runs a second time with a fresh cluster key (`key_file` in
[agent]), the client holding the key (its CURVE pairs derived as src/cluster_key.rs documents);
figures 1-3 as above, crash-to-respawn skipped (no network in it, and it takes ~30 s). A second
table compares it with the plaintext run: targets keyed p50 <= 1.3 x plaintext p50, keyed RSS
<= plaintext RSS + 1 MiB. Its round trips come from a further run with both agents at once
(keyed on 5565-5567), in alternating blocks of requests: one after the other, the two runs
differed more by the load of the machine than by CURVE. Its floor: the echo ROUTER above and a CURVE one, measured in
alternating blocks so that both see the same load.
"""

import argparse
import base64
import hashlib
import hmac
import json
import math
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

N_WATCHERS = 10
PROCS_PER_WATCHER = 10
RT_WARMUP = 200
RT_COUNT = 2000
SPAWN_N = 200
SPAWN_RUNS = 3
KILLS = 10
KILL_PHASE_S = 5.0  # random wait before each kill: circusd reaps every check_delay = 5 s
CALL_TIMEOUT_S = 10.0
OUTER_TIMEOUT_S = 1200  # the whole inner run
TARGET_RSS_MB = 6.0
TARGET_SPAWN_MS = 60.0
TARGET_CURVE_P50_RATIO = 1.3
TARGET_CURVE_RSS_MB = 1.0
FLOOD_S = 5.0
TARGET_FLOOD_EXTRA_MB = 2.0


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Outer part: root namespace. Creates the namespace, runs the inner part in it, cleans up.
# --------------------------------------------------------------------------------------------


class Terminated(Exception):
    pass


def netns_pids(ns):
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=10)
    return [int(p) for p in out.stdout.split() if p.isdigit()]


def stop_inner(inner_proc, grace):
    """SIGINT to the inner part (it stops its daemons itself), SIGKILL after `grace` seconds."""
    if inner_proc is None or inner_proc.poll() is not None:
        return
    try:
        inner_proc.send_signal(signal.SIGINT)
        inner_proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        inner_proc.kill()
        inner_proc.wait(timeout=10)


def outer(args):
    if os.geteuid() != 0:
        sys.exit("compare.py: needs root (it creates a network namespace for circusd)")
    for path in (args.agent, args.circusd):
        if not os.access(path, os.X_OK):
            sys.exit(f"compare.py: {path} is missing or not executable")
    ns = f"trb-{os.getpid()}"

    def on_term(signum, frame):
        raise Terminated()

    signal.signal(signal.SIGTERM, on_term)
    created = False
    inner_proc = None
    try:
        subprocess.run(["ip", "netns", "add", ns], check=True, timeout=10)
        created = True
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True, timeout=10)
        log(f"network namespace {ns} created (lo only)")
        cmd = [
            "ip", "netns", "exec", ns,
            sys.executable, "-u", os.path.abspath(__file__), "--inner",
            "--agent", os.path.abspath(args.agent),
            "--circusd", os.path.abspath(args.circusd),
            "--outer-netns", own_netns(),
        ]
        inner_proc = subprocess.Popen(cmd)
        rc = inner_proc.wait(timeout=OUTER_TIMEOUT_S)
        return rc
    except subprocess.TimeoutExpired:
        log(f"inner run exceeded {OUTER_TIMEOUT_S} s: stopping it")
        return 1
    except (KeyboardInterrupt, Terminated):
        log("interrupted: cleaning up")
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop_inner(inner_proc, grace=40)
        if created:
            # Everything still in the namespace was started by this run.
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                pids = netns_pids(ns)
                if not pids:
                    break
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                time.sleep(0.1)
            left = netns_pids(ns)
            if left:
                log(f"warning: processes still in {ns}: {left}")
            subprocess.run(["ip", "netns", "del", ns], timeout=10)
            log(f"network namespace {ns} deleted")


# --------------------------------------------------------------------------------------------
# Inner part: inside the namespace.
# --------------------------------------------------------------------------------------------

# The cluster key scheme of src/cluster_key.rs (its `kdf_vectors_are_pinned` test pins the
# same derivation): a key line is `troupe-key-v1:<base64 of 32 bytes>`; HKDF-SHA256 with this
# salt and one info string per pair gives each X25519 secret.
KEY_PREFIX = "troupe-key-v1:"
KDF_SALT = b"troupe cluster key v1"
INFO_SERVER = b"troupe curve server v1"
INFO_CLIENT = b"troupe curve client v1"


def hkdf_sha256(secret, info, length=32):
    """RFC 5869 extract-then-expand."""
    prk = hmac.new(KDF_SALT, secret, hashlib.sha256).digest()
    out, block, i = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([i]), hashlib.sha256).digest()
        out += block
        i += 1
    return out[:length]


class CurveKeys:
    """What a key holder's client presents: the server's public key and the client pair (z85)."""

    def __init__(self, zmq, key_line):
        from zmq.utils import z85

        secret = base64.b64decode(key_line[len(KEY_PREFIX):], validate=True)
        server_secret = z85.encode(hkdf_sha256(secret, INFO_SERVER))
        self.server_secret = server_secret
        self.server_public = zmq.curve_public(server_secret)
        self.client_secret = z85.encode(hkdf_sha256(secret, INFO_CLIENT))
        self.client_public = zmq.curve_public(self.client_secret)


def new_key_line():
    return KEY_PREFIX + base64.b64encode(os.urandom(32)).decode()



class CallError(Exception):
    """A request that failed: keeps the exact request and reply for the report."""

    def __init__(self, request, reply):
        self.request = request
        self.reply = reply
        super().__init__(f"request {request}\n    -> reply {reply}")


class Client:
    """One DEALER, one request at a time, replies matched by id (as circusctl does)."""

    def __init__(self, zmq, endpoint, curve=None):
        self.zmq = zmq
        self.ctx = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.IDENTITY, uuid.uuid4().hex.encode())
        if curve is not None:
            self.sock.setsockopt(zmq.CURVE_SERVERKEY, curve.server_public)
            self.sock.setsockopt(zmq.CURVE_PUBLICKEY, curve.client_public)
            self.sock.setsockopt(zmq.CURVE_SECRETKEY, curve.client_secret)
        self.sock.connect(endpoint)
        self.poller = zmq.Poller()
        self.poller.register(self.sock, zmq.POLLIN)
        self.n = 0

    def close(self):
        self.sock.close(0)

    def raw(self, command, properties=None, timeout=CALL_TIMEOUT_S):
        """Sends one request; returns (reply dict, seconds from send to the matching reply)."""
        self.n += 1
        rid = f"b{self.n}"
        msg = json.dumps({"command": command, "properties": properties or {}, "id": rid})
        data = msg.encode()
        t0 = time.perf_counter()
        self.sock.send(data)
        deadline = t0 + timeout
        while True:
            left = deadline - time.perf_counter()
            if left <= 0 or not self.poller.poll(max(1, int(left * 1000))):
                raise CallError(msg, f"(no reply within {timeout:g} s)")
            frame = self.sock.recv()
            t1 = time.perf_counter()
            try:
                reply = json.loads(frame)
            except ValueError:
                raise CallError(msg, frame.decode(errors="replace"))
            if reply.get("id") == rid:
                return msg, reply, t1 - t0

    def call(self, command, properties=None, timeout=CALL_TIMEOUT_S, retry_locked=False):
        """An ok reply or CallError. With retry_locked, circusd's errno 5 "arbiter is already
        running ... command" is retried (every 20 ms, up to 10 s); returns (reply, retries)."""
        retries = 0
        deadline = time.monotonic() + 10
        while True:
            msg, reply, _ = self.raw(command, properties, timeout)
            if reply.get("status") != "error":
                return (reply, retries) if retry_locked else reply
            locked = reply.get("errno") == 5 and "already running" in str(reply.get("reason"))
            if retry_locked and locked and time.monotonic() < deadline:
                retries += 1
                time.sleep(0.02)
                continue
            raise CallError(msg, json.dumps(reply))

    def pids(self, name):
        reply = self.call("list", {"name": name})
        pids = reply.get("pids")
        if not isinstance(pids, list):
            raise CallError(json.dumps({"command": "list", "properties": {"name": name}}), json.dumps(reply))
        return pids


def rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def percentile(values, p):
    s = sorted(values)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


def own_netns():
    return os.readlink("/proc/self/ns/net")


def kill_namespace_except_self(timeout=15):
    """SIGKILLs every process of this network namespace but this one (all were started by us)."""
    me = os.getpid()
    mine = own_netns()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == me:
                continue
            try:
                if os.readlink(f"/proc/{entry}/ns/net") != mine:
                    continue
                with open(f"/proc/{entry}/stat") as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state == "Z":
                continue  # reaped by its parent (init) shortly
            found.append(int(entry))
        if not found:
            return
        for pid in found:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    log("warning: some processes in the namespace survived SIGKILL")


class Daemon:
    name = "?"
    curve = None  # the client's CURVE keys when the daemon is keyed

    def __init__(self, workdir, sleep_bin):
        self.workdir = workdir
        self.sleep_bin = sleep_bin
        self.proc = None

    def log_path(self):
        return os.path.join(self.workdir, f"{self.short}.log")

    def start(self):
        logf = open(self.log_path(), "wb")
        # A key named by the environment would make the plaintext run keyed.
        env = {k: v for k, v in os.environ.items() if k != "TROUPE_KEY_FILE"}
        self.proc = subprocess.Popen(
            self.command(), stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
            start_new_session=True, cwd=self.workdir, env=env,
        )
        logf.close()

    def stop(self, sweep=True):
        """SIGTERM, SIGKILL after 30 s; with `sweep`, then every process left in the namespace."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                log(f"{self.name} did not exit within 30 s of SIGTERM: SIGKILL")
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None
        if sweep:
            kill_namespace_except_self()

    def rss_pids(self, client):
        return [self.proc.pid]


class Troupe(Daemon):
    name = "troupe-agent"
    short = "troupe"
    port = 5555

    def __init__(self, workdir, sleep_bin, binary, zmq=None, keyed=False):
        super().__init__(workdir, sleep_bin)
        self.binary = binary
        key_lines = []
        if keyed:
            self.name = "troupe-agent CURVE"
            self.short = "troupe-keyed"
            self.port = 5565  # beside the plaintext one, for the interleaved round trip
            key_line = new_key_line()
            self.curve = CurveKeys(zmq, key_line)
            key_file = os.path.join(workdir, "cluster.key")
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(key_line + "\n")
            key_lines = [f'key_file = "{key_file}"']
        self.config = os.path.join(workdir, f"{self.short}-agent.toml")
        lines = [
            "[agent]",
            'name = "bench"',
            'bind = "127.0.0.1"',
            f"control_port = {self.port}",
            f"pubsub_port = {self.port + 1}",
            f"stats_port = {self.port + 2}",
            f'state_dir = "{os.path.join(workdir, self.short + "-state")}"',
            "mdns = false",
            *key_lines,
            # The bench adds watchers over loopback TCP, as it does to circusd, so both are
            # measured over the same transport.
            "allow_remote_exec = true",
            "",
        ]
        for i in range(N_WATCHERS):
            lines += [
                f"[watcher.w{i}]",
                f'cmd = "{sleep_bin} 1000"',
                f"numprocesses = {PROCS_PER_WATCHER}",
                "graceful_timeout = 5",
                'min_uptime = "1s"',
                "",
            ]
        if not keyed:
            # (5): started and stopped by measure_flood, not running for the other figures.
            yes_bin = shutil.which("yes") or "/usr/bin/yes"
            lines += [
                "[watcher.flood]",
                f'cmd = "{yes_bin} a line of output printed as fast as it can be"',
                "autostart = false",
                "graceful_timeout = 1",
                "",
            ]
        with open(self.config, "w") as f:
            f.write("\n".join(lines))

    def command(self):
        return [self.binary, "--config", self.config, "--log-level", "info"]


class Circus(Daemon):
    name = "circusd 0.19"
    short = "circusd"
    port = 6555

    def __init__(self, workdir, sleep_bin, binary):
        super().__init__(workdir, sleep_bin)
        self.binary = binary
        self.config = os.path.join(workdir, "circus.ini")
        lines = [
            "[circus]",
            "check_delay = 5",
            f"endpoint = tcp://127.0.0.1:{self.port}",
            f"pubsub_endpoint = tcp://127.0.0.1:{self.port + 1}",
            f"stats_endpoint = tcp://127.0.0.1:{self.port + 2}",
            "statsd = true",
            "",
        ]
        for i in range(N_WATCHERS):
            lines += [
                f"[watcher:w{i}]",
                f"cmd = {sleep_bin} 1000",
                f"numprocesses = {PROCS_PER_WATCHER}",
                "graceful_timeout = 5",
                "",
            ]
        with open(self.config, "w") as f:
            f.write("\n".join(lines))

    def command(self):
        return [self.binary, "--log-level", "info", "--log-output", self.log_path() + ".circus",
                self.config]

    def rss_pids(self, client):
        stats = client.pids("circusd-stats")
        return [self.proc.pid] + stats


def start_ready(zmq, daemon):
    """Starts the daemon and waits until it answers and all 10 x 10 processes run; returns a
    client to it."""
    endpoint = f"tcp://127.0.0.1:{daemon.port}"
    log(f"{daemon.name}: starting ({' '.join(daemon.command())})")
    daemon.start()
    client = Client(zmq, endpoint, daemon.curve)
    try:
        deadline = time.monotonic() + 60
        ready = False
        last = None
        while time.monotonic() < deadline:
            if daemon.proc.poll() is not None:
                raise RuntimeError(f"{daemon.name} exited with {daemon.proc.returncode}; log {daemon.log_path()}")
            try:
                counts = [len(client.pids(f"w{i}")) for i in range(N_WATCHERS)]
                last = counts
                if all(c == PROCS_PER_WATCHER for c in counts):
                    if not isinstance(daemon, Circus) or client.pids("circusd-stats"):
                        ready = True
                        break
            except CallError as e:
                last = str(e)
                # a fresh DEALER in case the daemon was not bound yet when the first was used
                client.close()
                client = Client(zmq, endpoint, daemon.curve)
            time.sleep(0.1)
        if not ready:
            raise RuntimeError(f"{daemon.name}: not ready within 60 s (last: {last})")
    except BaseException:
        client.close()
        daemon.stop(sweep=False)
        raise
    log(f"{daemon.name}: {N_WATCHERS} x {PROCS_PER_WATCHER} processes running; settling 3 s")
    time.sleep(3)
    return client


def measure_rt_interleaved(zmq, daemons):
    """Both daemons running at once, the `status` loop against each in alternating blocks of
    FLOOR_BLOCK requests, so that the ratio of their round trips is not the machine's load
    changing between two runs; returns [(p50, p99)] in the order of `daemons`."""
    clients = []
    try:
        for daemon in daemons:
            clients.append(start_ready(zmq, daemon))
        for client in clients:
            for _ in range(RT_WARMUP):
                client.call("status")
        times = tuple([] for _ in daemons)
        for block in range(RT_COUNT // FLOOR_BLOCK):
            order = range(len(daemons)) if block % 2 == 0 else reversed(range(len(daemons)))
            for i in order:
                for _ in range(FLOOR_BLOCK):
                    msg, reply, dt = clients[i].raw("status")
                    if reply.get("status") != "ok":
                        raise CallError(msg, json.dumps(reply))
                    times[i].append(dt * 1000)
        return [(statistics.median(t), percentile(t, 99)) for t in times]
    finally:
        for client in clients:
            client.close()
        for daemon in daemons:
            daemon.stop(sweep=False)
        kill_namespace_except_self()


def measure(zmq, daemon, respawn=True):
    """Runs every measurement against one daemon (crash-to-respawn only with `respawn`);
    returns (results, failures)."""
    res = {}
    failures = []
    client = start_ready(zmq, daemon)
    try:

        # (3) RSS with 10 x 10 processes running.
        try:
            pids = daemon.rss_pids(client)
            parts = [(p, rss_kb(p)) for p in pids]
            res["rss_parts"] = parts
            res["rss_mb"] = sum(k or 0 for _, k in parts) / 1024
        except CallError as e:
            failures.append(("RSS", e))

        # (5) RSS under a flooding watcher (troupe-agent only).
        if isinstance(daemon, Troupe) and daemon.curve is None:
            try:
                measure_flood(client, daemon, res)
            except CallError as e:
                failures.append(("RSS under a flood", e))

        # (1) status round trip.
        try:
            for _ in range(RT_WARMUP):
                client.call("status")
            times = []
            for _ in range(RT_COUNT):
                msg, reply, dt = client.raw("status")
                if reply.get("status") != "ok":
                    raise CallError(msg, json.dumps(reply))
                times.append(dt * 1000)
            res["rt_p50"] = statistics.median(times)
            res["rt_p99"] = percentile(times, 99)
            res["rt_mean"] = statistics.fmean(times)
            log(f"{daemon.name}: status round trip p50 {res['rt_p50']:.3f} ms p99 {res['rt_p99']:.3f} ms")
        except CallError as e:
            failures.append(("status round trip", e))

        # (2) 200 processes of one watcher.
        try:
            spawn_ms, reply_ms, retries_all = [], [], []
            for run in range(SPAWN_RUNS):
                name = f"big{run}"
                client.call("add", {"name": name, "cmd": f"{daemon.sleep_bin} 1000", "start": False,
                                    "options": {"numprocesses": SPAWN_N, "warmup_delay": 0,
                                                "graceful_timeout": 5}},
                            retry_locked=True)
                before = client.pids(name)
                if before:
                    raise CallError(json.dumps({"command": "list", "properties": {"name": name}}),
                                    f"pids before start: {len(before)} (expected 0)")
                # Measured from the send of the (accepted) start request.
                retries = 0
                lock_deadline = time.monotonic() + 10
                while True:
                    t0 = time.perf_counter()
                    msg, reply, dt = client.raw("start", {"name": name, "waiting": True}, timeout=60)
                    if reply.get("status") == "error" and reply.get("errno") == 5 \
                            and time.monotonic() < lock_deadline:
                        retries += 1
                        time.sleep(0.02)
                        continue
                    if reply.get("status") != "ok":
                        raise CallError(msg, json.dumps(reply))
                    break
                reply_ms.append(dt * 1000)
                deadline = time.monotonic() + 30
                n = 0
                while time.monotonic() < deadline:
                    n = len(client.pids(name))
                    if n >= SPAWN_N:
                        break
                    time.sleep(0.001)
                t1 = time.perf_counter()
                if n < SPAWN_N:
                    raise CallError(json.dumps({"command": "list", "properties": {"name": name}}),
                                    f"only {n} pids 30 s after start")
                spawn_ms.append((t1 - t0) * 1000)
                retries_all.append(retries)
                client.call("stop", {"name": name, "waiting": True}, timeout=60, retry_locked=True)
                client.call("rm", {"name": name, "waiting": True}, timeout=60, retry_locked=True)
                time.sleep(1)
            res["spawn_ms"] = statistics.median(spawn_ms)
            res["spawn_all"] = spawn_ms
            res["spawn_reply_all"] = reply_ms
            res["spawn_retries"] = retries_all
            log(f"{daemon.name}: 200 running after {', '.join(f'{x:.1f}' for x in spawn_ms)} ms")
        except CallError as e:
            failures.append(("200 processes", e))

        # (4) crash to respawn on w0 (its processes have been up for several seconds, longer than
        # troupe's min_uptime, so each kill is a healthy run's death, not a quick death).
        try:
            if not respawn:
                raise SkipRespawn()
            lat = []
            victims = list(client.pids("w0"))
            for victim in victims[:KILLS]:
                # A random phase, so that kills do not all land just after circusd's
                # housekeeping tick (which the previous respawn was, when waited for).
                time.sleep(random.uniform(0, KILL_PHASE_S))
                before = set(client.pids("w0"))
                if victim not in before:
                    continue
                t0 = time.perf_counter()
                os.kill(victim, signal.SIGKILL)
                deadline = time.monotonic() + 15
                new = set()
                while time.monotonic() < deadline:
                    new = set(client.pids("w0")) - before
                    if new:
                        break
                    time.sleep(0.001)
                t1 = time.perf_counter()
                if not new:
                    raise CallError(json.dumps({"command": "list", "properties": {"name": "w0"}}),
                                    f"no new pid 15 s after kill -9 {victim}")
                lat.append((t1 - t0) * 1000)
                # back to 10, victim gone, before the next kill
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline:
                    now = client.pids("w0")
                    if len(now) == PROCS_PER_WATCHER and victim not in now:
                        break
                    time.sleep(0.01)
            res["respawn_ms"] = statistics.median(lat)
            res["respawn_min"] = min(lat)
            res["respawn_max"] = max(lat)
            res["respawn_n"] = len(lat)
            log(f"{daemon.name}: crash->respawn median {res['respawn_ms']:.1f} ms over {len(lat)} kills")
        except SkipRespawn:
            log(f"{daemon.name}: crash->respawn skipped")
        except CallError as e:
            failures.append(("crash to respawn", e))

        # RSS again at the end, for information.
        try:
            pids = daemon.rss_pids(client)
            res["rss_end_mb"] = sum(rss_kb(p) or 0 for p in pids) / 1024
        except CallError:
            pass
    finally:
        client.close()
        log(f"{daemon.name}: stopping")
        daemon.stop()
    return res, failures


def measure_flood(client, daemon, res):
    """(5): peak RSS while the `flood` watcher prints flat out, and the lines its ring took in."""
    client.call("start", {"name": "flood", "waiting": True})
    try:
        first = client.call("logs", {"name": "flood", "lines": 0})["offset"]
        t0 = time.monotonic()
        peak = 0
        while time.monotonic() - t0 < FLOOD_S:
            peak = max(peak, rss_kb(daemon.proc.pid) or 0)
            time.sleep(0.05)
        last = client.call("logs", {"name": "flood", "lines": 0})["offset"]
        elapsed = time.monotonic() - t0
    finally:
        client.call("stop", {"name": "flood", "waiting": True})
    res["flood_rss_mb"] = peak / 1024
    res["flood_lines_per_s"] = (last - first) / elapsed
    log(f"{daemon.name}: RSS under a flooding watcher {res['flood_rss_mb']:.1f} MiB, "
        f"{res['flood_lines_per_s']:.0f} lines/s into the ring")


class SkipRespawn(Exception):
    pass


ECHO_PORT = 7555  # and 7556 for the CURVE one
FLOOR_BLOCK = 100
ECHO_CURVE_ENV = "BENCH_ECHO_CURVE_SECRET"  # the echo server's CURVE secret (z85), if any


def echo_server(port):
    """A minimal ROUTER answering every request at once (exits after 60 s idle). CURVE server
    when ECHO_CURVE_ENV is set (no ZAP handler: libzmq then admits any CURVE client)."""
    import zmq

    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    curve_secret = os.environ.get(ECHO_CURVE_ENV)
    if curve_secret:
        sock.setsockopt(zmq.CURVE_SERVER, 1)
        sock.setsockopt(zmq.CURVE_SECRETKEY, curve_secret.encode())
    sock.bind(f"tcp://127.0.0.1:{port}")
    while sock.poll(60000):
        ident, frame = sock.recv_multipart()
        req = json.loads(frame)
        reply = {"status": "ok", "time": time.time(), "statuses": {}, "id": req.get("id")}
        sock.send_multipart([ident, json.dumps(reply).encode()])


def start_echo_server(port, curve=None):
    env = {k: v for k, v in os.environ.items() if k != ECHO_CURVE_ENV}
    if curve is not None:
        env[ECHO_CURVE_ENV] = curve.server_secret.decode()
    return subprocess.Popen([sys.executable, os.path.abspath(__file__), "--echo-server", str(port)],
                            stdin=subprocess.DEVNULL, start_new_session=True, env=env)


def measure_floors(zmq):
    """The same `status` loop against two echo ROUTERs, plaintext and CURVE, in alternating
    blocks of FLOOR_BLOCK requests (so both see the same load on the machine); returns
    ((p50, p99) plaintext, (p50, p99) CURVE)."""
    curve = CurveKeys(zmq, new_key_line())
    procs = [start_echo_server(ECHO_PORT), start_echo_server(ECHO_PORT + 1, curve)]
    clients = [Client(zmq, f"tcp://127.0.0.1:{ECHO_PORT}"),
               Client(zmq, f"tcp://127.0.0.1:{ECHO_PORT + 1}", curve)]
    try:
        for client in clients:
            client.call("status", timeout=10)
            for _ in range(RT_WARMUP):
                client.call("status")
        times = ([], [])
        for block in range(RT_COUNT // FLOOR_BLOCK):
            order = (0, 1) if block % 2 == 0 else (1, 0)
            for i in order:
                times[i].extend(clients[i].raw("status")[2] * 1000 for _ in range(FLOOR_BLOCK))
        return tuple((statistics.median(t), percentile(t, 99)) for t in times)
    finally:
        for client in clients:
            client.close()
        for proc in procs:
            proc.kill()
            proc.wait(timeout=10)


def measure_spawn_floor(sleep_bin):
    """200 `sleep` processes started by a bare os.posix_spawn loop (vfork + exec, nothing else):
    what this machine's fork/exec costs, whoever asks for it. Median of SPAWN_RUNS."""
    runs = []
    for _ in range(SPAWN_RUNS):
        t0 = time.perf_counter()
        pids = [os.posix_spawn(sleep_bin, [sleep_bin, "1000"], {}) for _ in range(SPAWN_N)]
        runs.append((time.perf_counter() - t0) * 1000)
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        for pid in pids:
            os.waitpid(pid, 0)
        time.sleep(0.5)
    return statistics.median(runs), runs


def source_state():
    """The commit the agent was built from, and whether the work tree had changes."""
    try:
        head = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return f"{head or '?'}{' + uncommitted changes' if dirty else ''}"
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def fmt(v, spec=".3f"):
    return "n/a" if v is None else format(v, spec)


def inner(args):
    # Refuse to run anything outside a namespace of our own.
    if not args.outer_netns or own_netns() == args.outer_netns:
        sys.exit("compare.py --inner: still in the root network namespace; refusing to start circusd")
    import zmq

    sleep_bin = shutil.which("sleep") or "/bin/sleep"
    workdir = tempfile.mkdtemp(prefix="troupe-bench-")
    results = {}
    all_failures = []
    floor = None
    curve_floor = None
    interleaved = None
    spawn_floor = None
    try:
        try:
            floor, curve_floor = measure_floors(zmq)
        except CallError as e:
            log(f"echo floor: {e}")
        spawn_floor = measure_spawn_floor(sleep_bin)
        plain = Troupe(workdir, sleep_bin, args.agent)
        keyed = Troupe(workdir, sleep_bin, args.agent, zmq, keyed=True)
        daemons = ((plain, True), (keyed, False), (Circus(workdir, sleep_bin, args.circusd), True))
        for daemon, respawn in daemons:
            try:
                res, failures = measure(zmq, daemon, respawn)
            except Exception as e:  # a daemon that does not start: report, go on with the other
                log(f"{daemon.name}: {e}")
                res, failures = {}, [("start", e)]
            results[daemon.name] = res
            all_failures += [(daemon.name, what, e) for what, e in failures]
            time.sleep(1)
        try:
            interleaved = measure_rt_interleaved(zmq, (plain, keyed))
            log(f"interleaved status round trip p50/p99: plaintext {interleaved[0][0]:.3f}/{interleaved[0][1]:.3f}"
                f" ms, CURVE {interleaved[1][0]:.3f}/{interleaved[1][1]:.3f} ms")
        except (CallError, RuntimeError) as e:
            log(f"interleaved round trip: {e}")
            all_failures.append(("troupe-agent plaintext + CURVE", "interleaved round trip", e))
    except KeyboardInterrupt:
        kill_namespace_except_self()
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    finally:
        kill_namespace_except_self()

    t = results.get("troupe-agent", {})
    c = results.get("circusd 0.19", {})

    def verdict(ok):
        return "" if ok is None else ("PASS" if ok else "FAIL")

    def half_target(key):
        if key not in t or key not in c:
            return "n/a", None
        return f"<= {c[key] / 2:.3f}", t[key] <= c[key] / 2

    rows = []
    tgt, ok = half_target("rt_p50")
    rows.append(("status round trip p50 (ms)", fmt(t.get("rt_p50")), fmt(c.get("rt_p50")), tgt, verdict(ok)))
    tgt, ok = half_target("rt_p99")
    rows.append(("status round trip p99 (ms)", fmt(t.get("rt_p99")), fmt(c.get("rt_p99")), tgt, verdict(ok)))
    ok = None if "spawn_ms" not in t else t["spawn_ms"] <= TARGET_SPAWN_MS
    rows.append(("200 processes running (ms)", fmt(t.get("spawn_ms"), ".1f"), fmt(c.get("spawn_ms"), ".1f"),
                 f"<= {TARGET_SPAWN_MS:g}", verdict(ok)))
    ok = None if "rss_mb" not in t else t["rss_mb"] <= TARGET_RSS_MB
    rows.append(("RSS, 10 x 10 sleep (MiB)", fmt(t.get("rss_mb"), ".1f"), fmt(c.get("rss_mb"), ".1f"),
                 f"<= {TARGET_RSS_MB:g}", verdict(ok)))
    ok = None if "flood_rss_mb" not in t or "rss_mb" not in t else \
        t["flood_rss_mb"] <= t["rss_mb"] + TARGET_FLOOD_EXTRA_MB
    rows.append(("RSS, + 1 watcher printing flat out (MiB)", fmt(t.get("flood_rss_mb"), ".1f"), "n/a",
                 "n/a" if "rss_mb" not in t else f"<= {t['rss_mb'] + TARGET_FLOOD_EXTRA_MB:.1f}",
                 verdict(ok)))
    rows.append(("crash -> respawn median (ms)", fmt(t.get("respawn_ms"), ".1f"), fmt(c.get("respawn_ms"), ".1f"),
                 "", ""))

    load = open("/proc/loadavg").read().split()[:3]
    print()
    print(f"troupe-agent vs circusd 0.19  ({time.strftime('%Y-%m-%d %H:%M:%S')}, {os.cpu_count()} CPUs, "
          f"load {' '.join(load)}; namespace with lo only, 127.0.0.1)")
    print(f"{N_WATCHERS} watchers x {PROCS_PER_WATCHER} `{sleep_bin} 1000`; circusd check_delay = 5, statsd = true")
    print(f"troupe-agent built from {source_state()}")
    print()
    header = ("", "troupe-agent", "circusd 0.19", "target (troupe)", "")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(5)]
    line = "  ".join(str(header[i]).ljust(widths[i]) if i == 0 else str(header[i]).rjust(widths[i])
                     for i in range(5))
    print(line.rstrip())
    print("-" * len(line.rstrip()))
    for r in rows:
        print("  ".join(str(r[i]).ljust(widths[i]) if i == 0 else str(r[i]).rjust(widths[i])
                        for i in range(5)).rstrip())
    print()
    print("details:")
    if floor:
        print(f"  floor (same loop against a pyzmq ROUTER that answers at once): p50 {floor[0]:.3f} ms, "
              f"p99 {floor[1]:.3f} ms")
    if spawn_floor:
        print(f"  spawn floor ({SPAWN_N} `sleep` by a bare os.posix_spawn loop, no supervisor): median "
              f"{spawn_floor[0]:.1f} ms ({', '.join(f'{x:.1f}' for x in spawn_floor[1])})")
    for name, r in results.items():
        if not r:
            print(f"  {name}: no figures")
            continue
        if "rt_mean" in r:
            print(f"  {name}: status round trip mean {r['rt_mean']:.3f} ms over {RT_COUNT} (after {RT_WARMUP} warm-up)")
        if "spawn_all" in r:
            print(f"  {name}: 200 running after " + ", ".join(f"{x:.1f}" for x in r["spawn_all"])
                  + " ms; `start` reply after " + ", ".join(f"{x:.1f}" for x in r["spawn_reply_all"])
                  + f" ms; start refused as locked (retried): {r['spawn_retries']}")
        if "rss_parts" in r:
            print(f"  {name}: RSS " + " + ".join(f"pid {p} {k / 1024 if k else 0:.1f}" for p, k in r["rss_parts"])
                  + f" MiB; at the end of the run {fmt(r.get('rss_end_mb'), '.1f')} MiB")
        if "flood_lines_per_s" in r:
            print(f"  {name}: flooding watcher (`yes`, ring at its default 1 MiB bound): "
                  f"{r['flood_lines_per_s']:.0f} lines/s taken in over {FLOOD_S:g} s, peak RSS "
                  f"{r['flood_rss_mb']:.1f} MiB")
        if "respawn_ms" in r:
            print(f"  {name}: crash -> respawn over {r['respawn_n']} kills (each after a random 0-{KILL_PHASE_S:g} s pause): min {r['respawn_min']:.1f}, "
                  f"median {r['respawn_ms']:.1f}, max {r['respawn_max']:.1f} ms")
    print_curve_table(t, results.get("troupe-agent CURVE", {}), interleaved, floor, curve_floor)
    if all_failures:
        print()
        print("failures (exact request and reply):")
        for name, what, e in all_failures:
            print(f"  {name}: {what}: {e}")
    if all_failures:
        print(f"\nlogs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if all_failures else 0


def print_curve_table(plain, keyed, interleaved, floor, curve_floor):
    """Keyed troupe-agent against the plaintext run, with issue 12's targets. The round trip
    rows are the interleaved run's (both agents at once), the others the runs one at a time."""
    plain, keyed = dict(plain), dict(keyed)
    separate = {k: (keyed.get(k), plain.get(k)) for k in ("rt_p50", "rt_p99")}
    for d in (plain, keyed):
        d.pop("rt_p50", None)
        d.pop("rt_p99", None)
    if interleaved:
        (plain["rt_p50"], plain["rt_p99"]), (keyed["rt_p50"], keyed["rt_p99"]) = interleaved

    def verdict(ok):
        return "" if ok is None else ("PASS" if ok else "FAIL")

    def ratio_row(label, key, target):
        if key not in plain or key not in keyed:
            return (label, fmt(keyed.get(key)), fmt(plain.get(key)), "n/a", "", "")
        ratio = keyed[key] / plain[key]
        ok = None if target is None else ratio <= target
        return (label, fmt(keyed[key]), fmt(plain[key]), f"x {ratio:.3f}",
                "" if target is None else f"<= x {target:g}", verdict(ok))

    rows = [
        ratio_row("status round trip p50 (ms)", "rt_p50", TARGET_CURVE_P50_RATIO),
        ratio_row("status round trip p99 (ms)", "rt_p99", None),
    ]
    if "rss_mb" in plain and "rss_mb" in keyed:
        delta = keyed["rss_mb"] - plain["rss_mb"]
        rows.append(("RSS, 10 x 10 sleep (MiB)", fmt(keyed["rss_mb"], ".2f"), fmt(plain["rss_mb"], ".2f"),
                     f"{delta:+.2f}", f"<= +{TARGET_CURVE_RSS_MB:g}", verdict(delta <= TARGET_CURVE_RSS_MB)))
    else:
        rows.append(("RSS, 10 x 10 sleep (MiB)", fmt(keyed.get("rss_mb"), ".2f"),
                     fmt(plain.get("rss_mb"), ".2f"), "n/a", "", ""))
    if "spawn_ms" in plain and "spawn_ms" in keyed:
        rows.append(("200 processes running (ms)", fmt(keyed["spawn_ms"], ".1f"), fmt(plain["spawn_ms"], ".1f"),
                     f"x {keyed['spawn_ms'] / plain['spawn_ms']:.3f}", "", ""))
    print()
    print("CURVE: troupe-agent with a cluster key (client holds the key) vs the plaintext run above")
    print(f"(round trips: both agents running at once, {RT_COUNT} requests each in alternating blocks of "
          f"{FLOOR_BLOCK}; crash -> respawn not measured keyed: nothing of it crosses the network)")
    print()
    header = ("", "keyed", "plaintext", "keyed/plain", "target", "")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(6)]
    line = "  ".join(str(header[i]).ljust(widths[i]) if i == 0 else str(header[i]).rjust(widths[i])
                     for i in range(6))
    print(line.rstrip())
    print("-" * len(line.rstrip()))
    for r in rows:
        print("  ".join(str(r[i]).ljust(widths[i]) if i == 0 else str(r[i]).rjust(widths[i])
                        for i in range(6)).rstrip())
    print()
    print("  one agent at a time (runs above): status p50 keyed {} / plaintext {} ms, p99 {} / {} ms".format(
        *(fmt(v) for pair in separate.values() for v in pair)))
    if floor and curve_floor:
        print(f"  floor (pyzmq echo ROUTER, the two interleaved in blocks of {FLOOR_BLOCK}): CURVE p50 "
              f"{curve_floor[0]:.3f} ms, p99 {curve_floor[1]:.3f} ms; plaintext p50 {floor[0]:.3f} ms, "
              f"p99 {floor[1]:.3f} ms; p50 x {curve_floor[0] / floor[0]:.3f}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--outer-netns", help=argparse.SUPPRESS)
    p.add_argument("--agent", default=os.path.join(ROOT, "target/release/troupe-agent"))
    p.add_argument("--circusd", default=os.path.join(ROOT, ".venv-circus/bin/circusd"))
    p.add_argument("--echo-server", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.echo_server:
        echo_server(args.echo_server)
        return
    if args.inner:
        # First SIGINT/SIGTERM interrupts the run; later ones are ignored so cleanup finishes.
        def interrupt(signum, frame):
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            raise KeyboardInterrupt()

        signal.signal(signal.SIGINT, interrupt)
        signal.signal(signal.SIGTERM, interrupt)
        try:
            sys.exit(inner(args))
        except KeyboardInterrupt:
            log("interrupted")
            sys.exit(130)
    sys.exit(outer(args))


if __name__ == "__main__":
    main()
