"""`lmtk serve-model` against the hostile requests of issue #12, on raw sockets (no client library
would send them): JSON nested 80,000 deep on every route, a TLS ClientHello on the plain port,
idle and slowloris connections and idle WebSocket handshakes that once starved every worker,
pipelined requests, oversize bodies and headers, and repeated 10 MB bodies that once left their
memory behind. After each, the server must still answer at once. Only 127.0.0.1; every wait is
bounded."""

import json
import os
import socket
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import serve_common  # noqa: E402

ROUTES = ("/v1/chat/completions", "/v1/completions", "/chat/completions", "/completions", "/api/generate",
          "/api/chat", "/api/show", "/completion", "/tokenize", "/detokenize", "/apply-template")

# The first bytes of a TLS 1.2 ClientHello, as a client that mistakes the port for HTTPS sends.
TLS_HELLO = bytes.fromhex("16030100a5010000a10303") + bytes(range(32)) + bytes.fromhex("000020c02bc02fc02cc030cca9cca8")


def connect(port, timeout=10):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def recv_all(s, limit=1 << 20):
    """Everything until the server closes (or `limit` bytes, or the socket's timeout)."""
    out = b""
    try:
        while len(out) < limit:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    except socket.timeout:
        pass
    return out


def post_raw(path, body, extra=""):
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{extra}"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def status_of(response_bytes):
    line = response_bytes.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(" ")
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


class HostileRequestTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # --parallel 4 with a queue of 4: the configuration in which 45 idle connections once
        # took every HTTP thread (slots + queue + 4).
        cls.server = serve_common.Server(["--parallel", "4", "--max-queue", "4", "-c", "256",
                                          "--max-body", str(12 << 20)]).__enter__()

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def answers_at_once(self, within=5.0):
        t0 = time.time()
        status, body = self.server.post("/v1/completions", {"prompt": "Once", "max_tokens": 2, "temperature": 0},
                                        timeout=within)
        self.assertEqual(status, 200, body)
        self.assertLess(time.time() - t0, within)
        self.assertTrue(self.server.alive())

    def test_deeply_nested_json_on_every_route(self):
        deep_array = "[" * 80000 + "]" * 80000
        deep_value = '{"prompt": "a", "messages": [], "temperature": ' + "[" * 80000 + "]" * 80000 + "}"
        deep_object = '{"a":' * 80000 + "1" + "}" * 80000
        for path in ROUTES:
            for body in (deep_array, deep_value, deep_object):
                status, text = self.server.post(path, body)
                self.assertEqual(status, 400, f"{path}: {text[:200]}")
                err = json.loads(text)["error"]  # OpenAI's and llama.cpp's {message}, Ollama's plain string
                self.assertIn("nested", err["message"] if isinstance(err, dict) else err)
        # Depth within the limit is still read (and refused only for what it means).
        status, text = self.server.post("/v1/completions", '{"prompt": "a", "max_tokens": 1, "x": ' + "[" * 60 + "]" * 60 + "}")
        self.assertEqual(status, 200, text)
        self.answers_at_once()

    def test_tls_hello_is_refused_at_once(self):
        s = connect(self.server.port)
        t0 = time.time()
        s.sendall(TLS_HELLO)
        got = recv_all(s)
        s.close()
        self.assertLess(time.time() - t0, 2.0, "a TLS hello held the connection")
        self.assertEqual(status_of(got), 400, got[:200])
        self.answers_at_once()

    def test_idle_and_slow_connections_do_not_starve_the_workers(self):
        held = []
        try:
            # 60 idle connections, 30 slowloris ones that send half a header, 30 that promise a
            # body and trickle it, and 16 WebSocket handshakes to a path that is no endpoint.
            for _ in range(60):
                held.append(connect(self.server.port))
            for _ in range(30):
                s = connect(self.server.port)
                s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")
                held.append(s)
            for _ in range(30):
                s = connect(self.server.port)
                s.sendall(post_raw("/v1/completions", b"")[:-4] .replace(b"Content-Length: 0", b"Content-Length: 1000")
                          + b"\r\n\r\n{")
                held.append(s)
            time.sleep(0.3)
            for _ in range(3):
                self.answers_at_once(within=5.0)
        finally:
            for s in held:
                s.close()

    def test_lmtp_sessions_do_not_hold_workers(self):
        # 12 open LMTP sessions (more than --parallel 4 + queue 4 + 4 threads once allowed).
        held = []
        try:
            for i in range(12):
                s = connect(self.server.port)
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = s.recv(4096)
                    self.assertTrue(chunk, "the upgrade was not answered")
                    head += chunk
                self.assertEqual(status_of(head), 101, head)
                held.append(s)
            self.answers_at_once(within=5.0)
        finally:
            for s in held:
                s.close()

    def test_pipelined_requests_are_answered_in_order(self):
        bodies = [json.dumps({"content": w}).encode() for w in ("Once", "upon", "a time")]
        s = connect(self.server.port)
        s.sendall(b"".join(post_raw("/tokenize", b) for b in bodies)
                  + b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        got = recv_all(s)
        s.close()
        answers = got.split(b"HTTP/1.1 ")[1:]
        self.assertEqual(len(answers), 4, got[:2000])
        expected = [json.loads(self.server.post("/tokenize", b.decode())[1]) for b in bodies]
        for answer, want in zip(answers[:3], expected):
            self.assertTrue(answer.startswith(b"200"), answer[:200])
            self.assertEqual(json.loads(answer.split(b"\r\n\r\n", 1)[1]), want)
        self.assertIn(b'"status":"ok"', answers[3])

    def test_oversize_body_and_headers(self):
        # Declared too large: refused before the body is sent.
        s = connect(self.server.port)
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 999999999\r\n\r\n")
        got = recv_all(s)
        s.close()
        self.assertEqual(status_of(got), 413, got[:300])
        self.assertIn(b"limit", got)
        # Chunked, growing past the limit while it arrives.
        s = connect(self.server.port)
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"x" * 65536
        try:
            for _ in range(208):  # 13 MiB > the 12 MiB limit of this server
                s.sendall(b"10000\r\n" + chunk + b"\r\n")
        except OSError:
            pass  # the server answered and closed while we were still sending
        got = recv_all(s)
        s.close()
        self.assertEqual(status_of(got), 413, got[:300])
        # Headers over the limit.
        s = connect(self.server.port)
        try:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (100 << 10) + b"\r\n\r\n")
        except OSError:
            pass
        got = recv_all(s)
        s.close()
        self.assertEqual(status_of(got), 431, got[:300])
        self.answers_at_once()

    def test_large_bodies_do_not_ratchet_memory(self):
        # 10 MB of JSON in many small values: each once left ~75 MB in a worker's malloc arena.
        body = json.dumps({"prompt": "Once", "max_tokens": 1, "pad": ["x" * 64] * 145000})
        for _ in range(3):
            self.assertEqual(self.server.post("/v1/completions", body)[0], 200)
        time.sleep(0.3)
        warm = self.server.rss_kib()
        for _ in range(12):
            self.assertEqual(self.server.post("/v1/completions", body)[0], 200)
        time.sleep(0.3)
        rss = self.server.rss_kib()
        self.assertLess(rss, warm * 1.10 + 8 * 1024, f"RSS went from {warm} KiB to {rss} KiB over 12 bodies of 10 MB")

    def test_http10_and_head(self):
        s = connect(self.server.port)
        s.sendall(b"GET /health HTTP/1.0\r\n\r\n")
        got = recv_all(s)
        s.close()
        self.assertTrue(got.startswith(b"HTTP/1.0 200"), got[:200])
        s = connect(self.server.port)
        s.sendall(b"HEAD /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        got = recv_all(s)
        s.close()
        self.assertEqual(status_of(got), 200, got[:200])
        self.assertTrue(got.endswith(b"\r\n\r\n"), "HEAD answered with a body")

    def test_wrong_method_is_405(self):
        status, text = self.server.request("DELETE", "/v1/completions")
        self.assertEqual(status, 405, text)
        self.assertIn("error", json.loads(text))


if __name__ == "__main__":
    unittest.main()
