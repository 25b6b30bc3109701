"""`lmtk serve-model` under bad input and load: malformed JSON, wrong types, a prompt longer
than the context, many concurrent streaming clients, clients that hang up mid-stream, a full
queue (503), start-up configuration errors; the server keeps serving and its RSS returns near
the baseline. Only 127.0.0.1; every wait is bounded."""

import concurrent.futures
import json
import os
import socket
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import serve_common  # noqa: E402


def open_stream(port, path, body):
    """Sends a streaming POST on a raw socket and returns it (the caller reads and closes)."""
    data = json.dumps(body).encode()
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
              f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    return s


def wait_until(pred, timeout, step=0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


class MalformedInputTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = serve_common.Server(["-c", "256"]).__enter__()

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def expect(self, path, body, status=400, contains=None):
        got, text = self.server.post(path, body)
        self.assertEqual(got, status, f"{path} {body!r:.80} -> {got} {text[:200]}")
        if contains:
            self.assertIn(contains, text)
        json.loads(text)  # every error is JSON
        return text

    def test_malformed_json(self):
        for path in ("/v1/chat/completions", "/v1/completions", "/api/generate", "/api/chat", "/completion",
                     "/tokenize", "/detokenize", "/api/show"):
            self.expect(path, "{", contains="JSON")
            self.expect(path, "", contains="JSON")
            self.expect(path, "[1, 2]", contains="object")
            self.expect(path, b"\xff\xfe{\"a\": 1}")
        self.assertTrue(self.server.alive())

    def test_wrong_types(self):
        msgs = [{"role": "user", "content": "hi"}]
        cases = [
            ("/v1/chat/completions", {"messages": "hi"}, "messages"),
            ("/v1/chat/completions", {"messages": [{"content": "hi"}]}, "role"),
            ("/v1/chat/completions", {"messages": [{"role": "user", "content": 5}]}, "content"),
            ("/v1/chat/completions", {"messages": msgs, "max_tokens": "10"}, "max_tokens"),
            ("/v1/chat/completions", {"messages": msgs, "max_tokens": 1.5}, "max_tokens"),
            ("/v1/chat/completions", {"messages": msgs, "temperature": -1}, "temperature"),
            ("/v1/chat/completions", {"messages": msgs, "top_p": [1]}, "top_p"),
            ("/v1/chat/completions", {"messages": msgs, "stream": "yes"}, "stream"),
            ("/v1/chat/completions", {"messages": msgs, "stop": [1, 2]}, "stop"),
            ("/v1/chat/completions", {"messages": msgs, "n": 0}, "n"),
            ("/v1/chat/completions", {"messages": msgs, "top_logprobs": 3}, "logprobs"),
            ("/v1/chat/completions", {"messages": msgs, "logit_bias": {"abc": 1}}, "logit_bias"),
            ("/v1/chat/completions", {"messages": msgs, "logit_bias": {"99999": 1}}, "vocabulary"),
            ("/v1/chat/completions", {"messages": msgs, "seed": "x"}, "seed"),
            ("/v1/completions", {"prompt": {"a": 1}}, "prompt"),
            ("/v1/completions", {"prompt": [1, "x", None]}, "prompt"),
            ("/v1/completions", {"prompt": [1, 99999]}, "vocabulary"),
            ("/v1/completions", {"prompt": "a", "max_tokens": 10 ** 30}, "max_tokens"),
            ("/v1/completions", {"prompt": "a", "logprobs": 99}, "logprobs"),
            ("/api/generate", {"prompt": "a", "options": []}, "options"),
            ("/api/generate", {"prompt": "a", "options": {"temperature": "hot"}}, "temperature"),
            ("/api/generate", {"prompt": 5}, "prompt"),
            ("/api/chat", {"messages": [{"role": "user", "content": "a"}], "format": 5}, "format"),
            ("/completion", {"prompt": "a", "n_predict": "x"}, "n_predict"),
            ("/completion", {"prompt": "a", "logit_bias": [[1]]}, "logit_bias"),
            ("/tokenize", {"content": 5}, "content"),
            ("/detokenize", {"tokens": [-1]}, "vocabulary"),
            ("/detokenize", {"tokens": "abc"}, "tokens"),
        ]
        for path, body, word in cases:
            self.expect(path, body, contains=word)
        self.assertTrue(self.server.alive())

    def test_prompt_longer_than_context(self):
        long = "Once upon a time there was a little girl. " * 100  # far more than 256 tokens
        self.expect("/v1/completions", {"prompt": long, "max_tokens": 4}, contains="context")
        self.expect("/v1/chat/completions", {"messages": [{"role": "user", "content": long}]}, contains="context")
        self.expect("/api/generate", {"prompt": long, "stream": True}, contains="context")
        self.expect("/completion", {"prompt": long, "stream": True}, contains="context")
        # A prompt that fits but whose generation runs into the end of the context stops with "length".
        status, body = self.server.post("/v1/completions", {"prompt": "Once upon a time " * 20, "max_tokens": 1000,
                                                            "ignore_eos": True})
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body)["choices"][0]["finish_reason"], "length")

    def test_unknown_route_and_method(self):
        status, body = self.server.get("/v1/nothing")
        self.assertEqual(status, 404)
        self.assertIn("error", json.loads(body))

    def test_still_serving(self):
        status, body = self.server.post("/v1/completions", {"prompt": "Once", "max_tokens": 3})
        self.assertEqual(status, 200, body)


class LoadTest(unittest.TestCase):
    def test_concurrent_streams_disconnects_and_memory(self):
        with serve_common.Server(["--parallel", "4", "--max-queue", "64", "-c", "512"]) as s:
            # Warm up, then take the baseline.
            for _ in range(3):
                self.assertEqual(s.post("/v1/completions", {"prompt": "Once", "max_tokens": 16})[0], 200)
            baseline = s.rss_kib()

            def one(i):
                import openai
                c = openai.OpenAI(base_url=s.url + "/v1", api_key="x", timeout=120, max_retries=0)
                text = ""
                for ch in c.chat.completions.create(model="m", messages=[{"role": "user", "content": f"Story {i}"}],
                                                    max_tokens=24, stream=True, seed=i):
                    if ch.choices:
                        text += ch.choices[0].delta.content or ""
                return text

            t0 = time.time()
            for _ in range(2):
                with concurrent.futures.ThreadPoolExecutor(64) as ex:  # the 64 clients
                    results = list(ex.map(one, range(64), timeout=300))
                self.assertEqual(len(results), 64)
                self.assertTrue(all(results))
            self.assertLess(time.time() - t0, 300)
            # The slots shared forward passes: more rows than passes.
            b = json.loads(s.get("/props")[1])["batching"]
            self.assertGreater(b["rows"], 1.5 * b["forward_passes"], b)

            # Clients that hang up mid-stream: their slots must come back.
            for i in range(8):
                sock = open_stream(s.port, "/v1/completions",
                                   {"prompt": "Once", "max_tokens": 100000, "ignore_eos": True, "stream": True})
                sock.recv(512)  # the stream has started
                sock.close()
            self.assertTrue(wait_until(lambda: json.loads(s.get("/health")[1])["slots_processing"] == 0, 30),
                            "slots stay busy after their clients left\n" + s.log())
            self.assertIn("cancelled: client left", s.log())
            # ... and the server keeps serving.
            status, body = s.post("/api/generate", {"prompt": "Lily", "stream": False, "options": {"num_predict": 5}})
            self.assertEqual(status, 200, body)

            time.sleep(0.5)
            rss = s.rss_kib()
            self.assertLess(rss, baseline + 32 * 1024, f"RSS grew from {baseline} KiB to {rss} KiB")

    def test_full_queue_is_503(self):
        with serve_common.Server(["--parallel", "1", "--max-queue", "0", "-c", "4096"]) as s:
            sock = open_stream(s.port, "/completion", {"prompt": "Once", "n_predict": -1, "ignore_eos": True,
                                                      "stream": True})
            try:
                sock.recv(256)
                status, body = s.post("/v1/completions", {"prompt": "Once", "max_tokens": 2})
                self.assertEqual(status, 503, body)
                self.assertIn("busy", json.loads(body)["error"]["message"])
                status, body = s.post("/api/generate", {"prompt": "Once", "stream": False})
                self.assertEqual(status, 503, body)
            finally:
                sock.close()
            self.assertTrue(wait_until(lambda: s.post("/v1/completions", {"prompt": "Once", "max_tokens": 2})[0] == 200,
                                       30))


class StartupTest(unittest.TestCase):
    def run_cli(self, *args):
        return subprocess.run([serve_common.cli_path(), "serve-model", serve_common.model_path(), "--port", "0"]
                              + list(args), capture_output=True, timeout=60)

    def test_unknown_configuration_name(self):
        r = self.run_cli("--n_ctxx", "128")
        self.assertNotEqual(r.returncode, 0)
        err = r.stderr.decode()
        self.assertIn("n_ctxx", err)
        self.assertIn("--n_ctx", err)  # lists the valid names
        self.assertIn("--temperature", err)

    def test_wrong_configuration_type(self):
        r = self.run_cli("--n_ctx", "big")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("integer", r.stderr.decode())

    def test_configuration_is_applied(self):
        with serve_common.Server(["--n_ctx", "128", "--temperature", "0", "--top_k", "1"]) as s:
            props = json.loads(s.get("/props")[1])
            self.assertEqual(props["default_generation_settings"]["n_ctx"], 128)
            self.assertEqual(props["default_generation_settings"]["params"]["temperature"], 0)


if __name__ == "__main__":
    unittest.main()
