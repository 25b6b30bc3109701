"""Helpers for the `lmtk serve-model` tests: start a server on 127.0.0.1 with a port the OS
picks (--port 0; the server prints the one it bound), wait for /health, and always stop it.

Only 127.0.0.1 is used. Every wait is bounded.
"""

import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))

# The real clients must never reach for a proxy or the network.
os.environ["NO_PROXY"] = "127.0.0.1,localhost"
os.environ["no_proxy"] = "127.0.0.1,localhost"
for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
    os.environ.pop(var, None)
os.environ.setdefault("OPENAI_API_KEY", "sk-test")


def cli_path():
    env = os.environ.get("LMTK_CLI")
    if env:
        return env
    for sub in ("build/bin/lmtk", "build-serve/bin/lmtk"):
        p = os.path.join(REPO_ROOT, sub)
        if os.access(p, os.X_OK):
            return p
    raise FileNotFoundError("lmtk CLI not found: set LMTK_CLI to the built `lmtk` binary")


def model_path(name="stories260K.gguf"):
    d = os.environ.get("LMTK_TEST_MODELS") or os.path.join(REPO_ROOT, "..", "shared", "models")
    p = os.path.join(os.path.abspath(d), name)
    if not os.path.exists(p):  # a file, or a Hugging Face folder
        raise FileNotFoundError(f"test model not found: {p} (set LMTK_TEST_MODELS)")
    return p


_HAS_SERVE = None


def require_serve(cli=None):
    """Skips (not fails) when the CLI was built without serve-model (no lmtk::serve target)."""
    global _HAS_SERVE
    if _HAS_SERVE is None:
        out = subprocess.run([cli or cli_path(), "--help"], capture_output=True, timeout=30).stdout.decode()
        _HAS_SERVE = "serve-model" in out
    if not _HAS_SERVE:
        import unittest
        raise unittest.SkipTest("this lmtk was built without serve-model")


class Server:
    """`with Server(["--parallel", "2"]) as s:` ... s.url, s.port, s.log()."""

    def __init__(self, extra_args=(), start_timeout=60, cli=None, model=None, threads=1):
        self.args = [cli or cli_path(), "serve-model", model or model_path(), "--host", "127.0.0.1", "--port", "0",
                     "-t", str(threads)] + [str(a) for a in extra_args]
        self.start_timeout = start_timeout
        self.proc = None
        self.port = None
        self._lines = []
        self._lock = threading.Lock()
        self._port_seen = threading.Event()

    def __enter__(self):
        require_serve(self.args[0])
        # Under AddressSanitizer (the test build) freed memory waits in a quarantine of up to
        # 256 MiB before it is reused, which the RSS checks would read as a leak; a small one
        # keeps them meaningful. Ignored by builds without ASan.
        env = dict(os.environ)
        quarantine = "quarantine_size_mb=4:thread_local_quarantine_size_kb=64"
        env["ASAN_OPTIONS"] = (env["ASAN_OPTIONS"] + ":" + quarantine) if env.get("ASAN_OPTIONS") else quarantine
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        threading.Thread(target=self._drain, daemon=True).start()
        try:
            if not self._port_seen.wait(self.start_timeout):
                raise AssertionError("the server did not report its port in time\n" + self.log())
            deadline = time.time() + self.start_timeout
            while True:
                if self.proc.poll() is not None:
                    raise AssertionError(f"the server exited with {self.proc.returncode}\n" + self.log())
                try:
                    status, body = self.get("/health", timeout=2)
                    if status == 200 and json.loads(body).get("status") == "ok":
                        break
                except OSError:
                    pass
                if time.time() > deadline:
                    raise AssertionError("the server did not become healthy in time\n" + self.log())
                time.sleep(0.05)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def _drain(self):
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", errors="replace")
            with self._lock:
                self._lines.append(line)
            m = re.search(r"OpenAI\s+http://127\.0\.0\.1:(\d+)/v1", line)
            if m:
                self.port = int(m.group(1))
                self._port_seen.set()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def alive(self):
        return self.proc.poll() is None

    def log(self):
        with self._lock:
            return "".join(self._lines[-60:])

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    # Plain HTTP without any client library, for malformed requests and status checks.
    def request(self, method, path, body=None, headers=None, timeout=30):
        data = body.encode() if isinstance(body, str) else body
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers or {})
        if data is not None and "Content-Type" not in (headers or {}):
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read().decode("utf-8", errors="replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode("utf-8", errors="replace")

    def get(self, path, timeout=30):
        return self.request("GET", path, timeout=timeout)

    def post(self, path, obj, timeout=60):
        return self.request("POST", path, obj if isinstance(obj, (str, bytes)) else json.dumps(obj), timeout=timeout)


def json_object_prefix(text):
    """True when `text` is one JSON object, or a prefix that some suffix completes to one.

    Independent of the server's recogniser: Python's json module decides, on the text plus each
    of a few candidate endings (finish a literal, number, string, key or value) followed by the
    closers its open brackets need."""
    import json as _json
    s = text.lstrip()
    if not s.startswith("{"):
        return False

    def is_object(t):
        try:
            return isinstance(_json.loads(t), dict)
        except ValueError:
            return False

    if is_object(s):
        return True
    stack, in_str, esc = [], False, False
    for c in s:
        if in_str:
            if esc:
                esc = False
            elif c == "\\":
                esc = True
            elif c == '"':
                in_str = False
        elif c == '"':
            in_str = True
        elif c in "{[":
            stack.append(c)
        elif c in "}]":
            if not stack:
                return False
            stack.pop()
    closers = "".join("}" if b == "{" else "]" for b in reversed(stack))
    heads = ["", "0", "null", "rue", "ue", "e", "alse", "lse", "se", "ull", "ll", "l", '"k":0', '"', "0000"]
    if esc:  # inside a string, right after a backslash
        heads = ["n" + h for h in heads]
    for h in heads:
        for mid in ("", '"', ":0", '":0', '"0', '":0}', "0"):
            if is_object(s + h + mid + closers):
                return True
    return False
