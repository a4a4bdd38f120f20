"""Headless chromium driven over WebDriver (chromedriver's REST API, plain HTTP from the
standard library), for bench/mesh.py's dashboard figures. The same browser and options as
tests/dashboard.rs; nothing here reaches beyond the loopback of the network namespace it runs in.
"""

import base64
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# As root in a container: no sandbox; no GPU, no shared-memory dir to fill (as tests/dashboard.rs).
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--window-size=1400,1700"]


class WebDriverError(Exception):
    pass


def free_port(address="127.0.0.1"):
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def descendants(root):
    """`root` and every process under it (by parent pid), as found now."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


class Browser:
    """chromedriver (in a session of its own, which its chromium shares) and one headless
    chromium session; `close()` kills them all."""

    def __init__(self, log_path, env=None):
        if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
            raise WebDriverError(f"{CHROMIUM} or {CHROMEDRIVER} is missing: install them "
                                 f"(apt-get install -y chromium chromium-driver), as scripts/test does")
        self.port = free_port()
        # No proxy: chromedriver is on this namespace's loopback.
        self.http = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with open(log_path, "ab") as log:
            self.driver = subprocess.Popen([CHROMEDRIVER, f"--port={self.port}"], stdin=subprocess.DEVNULL,
                                           stdout=log, stderr=log, start_new_session=True, env=env)
        self.session = None
        try:
            deadline = time.monotonic() + 15
            while True:
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or self.driver.poll() is not None:
                        raise WebDriverError(f"chromedriver did not listen on 127.0.0.1:{self.port} "
                                             f"within 15 s (log {log_path})")
                    time.sleep(0.05)
            caps = {"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
                "binary": CHROMIUM, "args": CHROMIUM_ARGS}}}}
            self.session = self.request("POST", "/session", caps, timeout=60)["sessionId"]
        except BaseException:
            self.close()
            raise

    def request(self, method, path, body=None, timeout=60):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with self.http.open(req, timeout=timeout) as r:
                answer = json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            raise WebDriverError(f"{method} {path}: HTTP {e.code}: {e.read()[:1000]!r}")
        return answer.get("value")

    def at(self, path):
        return f"/session/{self.session}{path}"

    def goto(self, url, timeout=120):
        """Returns once the page fired `load` (WebDriver's normal page load strategy)."""
        self.request("POST", self.at("/url"), {"url": url}, timeout=timeout)

    def execute(self, script, *args, timeout=60):
        """Runs `script` (a function body: `return ...`) in the page; its JSON value."""
        return self.request("POST", self.at("/execute/sync"), {"script": script, "args": list(args)},
                            timeout=timeout)

    def on_new_document(self, source):
        """Runs `source` in every page this session opens from now on, before the page's own
        scripts (Chrome DevTools' Page.addScriptToEvaluateOnNewDocument, through chromedriver)."""
        self.request("POST", self.at("/goog/cdp/execute"),
                     {"cmd": "Page.addScriptToEvaluateOnNewDocument", "params": {"source": source}})

    def screenshot(self, path):
        png = base64.b64decode(self.request("GET", self.at("/screenshot"), timeout=120))
        with open(path, "wb") as f:
            f.write(png)
        return path

    def pids(self):
        """chromedriver, chromium and chromium's helpers, as running now."""
        return descendants(self.driver.pid)

    def close(self):
        if self.session is not None:
            try:
                self.request("DELETE", self.at(""), timeout=20)
            except (OSError, WebDriverError):
                pass
            self.session = None
        if self.driver.poll() is None:
            try:
                os.killpg(self.driver.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.driver.wait(timeout=10)
