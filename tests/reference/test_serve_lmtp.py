"""LMTP (LMQL's protocol: a WebSocket on GET /) of `lmtk serve-model`, against the numpy
reference forward pass and against the real LMQL client from PyPI.

Model: ../shared/models/tinystories-656k, a Hugging Face folder served as is; LMQL tokenizes
on the client side with that folder's own tokenizer (transformers' AutoTokenizer, which LMQL
picks for a path), so ids are the only thing that crosses the wire.

What is checked, and against what:
  - GENERATE (argmax): the streamed ids are the numpy reference's greedy continuation of the
    same ids, and every `logprob` / `top_logprobs` entry equals the reference's log_softmax
    within 2e-3 absolute. Why 2e-3: lmtk's logits agree with the reference within 1e-4
    relative (test_hf.py); these logits are below 20 in magnitude, so a log-softmax moves by
    at most 2 * 20 * 1e-4 = 4e-3 in the worst case and by far less in practice (measured:
    below 1e-5).
  - SCORE: each scored token's logprob equals the reference's log P(token | prefix) (same bound),
    including a sequence with an empty prompt (its first token is unconditioned: 0).
  - finish_reason: null on every token but the last; "length" at max_tokens, "stop" when the
    end token (id 2) is produced, and then that token is the stream's last.
  - logit_bias: +100 on a set keeps generation inside it; -100 bans the greedy choice, which
    then becomes the reference's second best. Several streams multiplexed on one socket each
    get exactly their own, unbatched, result.
  - errors in LMTP's forms (TOKEN-error for GENERATE/SCORE, MSG-error otherwise), and the same
    socket keeps serving afterwards; a prompt plus max_tokens beyond the context is an error,
    not a crash; a socket closed mid-stream frees its slot.
  - LMQL, with the tokenizer `lmtk export-tokenizer` writes for the served folder (README's
    setup): LMQL's ids for a text are exactly `lmtk tokenize`'s (the folder's own tokenizer_config
    names LlamaTokenizer, for which LMQL prepends a dummy "@" that this vocabulary drops, so
    "Once upon a time" would arrive as "ce upon a time"); an `argmax "...[X]" where
    len(TOKENS(X)) < 10` query, a STOPS_AT query (whose text must also equal `lmtk run`'s greedy
    text) and `lmql.score_sync`, each compared with the numpy reference.
Only 127.0.0.1; every wait is bounded.
"""

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import unittest

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# LMQL and transformers keep caches under $HOME; neither may touch the network.
_home = tempfile.mkdtemp(prefix="lmtk-lmtp-home-")
os.environ["HOME"] = _home
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_VERBOSITY"] = "error"

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import serve_common  # noqa: E402
from hf_ref import HFLlamaRef  # noqa: E402

import aiohttp  # noqa: E402  (LMQL's own WebSocket client library)
import lmql  # noqa: E402

TOL = 2e-3
EOS = 2
BOS = 1


def log_softmax(x):
    x = np.asarray(x, dtype=np.float64)
    m = x.max()
    return x - m - np.log(np.exp(x - m).sum())


class LmtpTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.folder = serve_common.model_path("tinystories-656k")
        # The Hugging Face tokenizer LMQL loads on the client side: lmtk's own, exported.
        cls.tokdir = os.path.join(_home, "tinystories-tokenizer")
        subprocess.run([serve_common.cli_path(), "export-tokenizer", cls.folder, cls.tokdir], check=True,
                       capture_output=True, timeout=120)
        cls.server = serve_common.Server(["--parallel", "2"], model=cls.folder).__enter__()
        cls.ref = HFLlamaRef(cls.folder)
        cls.endpoint = f"127.0.0.1:{cls.server.port}"

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    # -- a raw LMTP session ------------------------------------------------------------------
    def session(self, commands, expect_streams, timeout=60):
        """Sends each (command, payload) on one socket; collects TOKEN items per stream until each
        stream in expect_streams has ended (finish_reason or error), and every MSG item."""

        async def run():
            streams, msgs = {}, []
            async with aiohttp.ClientSession() as s:
                async with s.ws_connect(f"http://{self.endpoint}/", max_msg_size=1 << 24) as ws:
                    for cmd, payload in commands:
                        await ws.send_str(cmd + " " + (payload if isinstance(payload, str) else json.dumps(payload)))
                    open_ = set(expect_streams)
                    while open_ or len(msgs) < sum(1 for c, _ in commands if c not in ("GENERATE", "SCORE")):
                        m = await asyncio.wait_for(ws.receive(), timeout)
                        self.assertEqual(m.type, aiohttp.WSMsgType.TEXT, m)
                        cmd, _, body = m.data.partition(" ")
                        items = json.loads(body)
                        self.assertIsInstance(items, list)
                        for it in items:
                            if cmd == "MSG":
                                msgs.append(it)
                                continue
                            self.assertEqual(cmd, "TOKEN")
                            sid = it["stream_id"]
                            self.assertIn(sid, open_, f"a token for stream {sid} after its end: {it}")
                            streams.setdefault(sid, []).append(it)
                            if "error" in it or it["finish_reason"] is not None:
                                open_.discard(sid)
            return streams, msgs

        return asyncio.run(run())

    def generate(self, prompt, sid=1, **kw):
        p = {"model": "tinystories", "prompt": prompt, "stream_id": sid, "max_tokens": 8, "temperature": 0.0,
             "top_logprobs": 1}
        p.update(kw)
        return ("GENERATE", p)

    def ref_greedy(self, prompt, n):
        ids, out, lps = list(prompt), [], []
        for _ in range(n):
            lp = log_softmax(self.ref.forward(ids)[-1])
            t = int(np.argmax(lp))
            out.append(t)
            lps.append(lp)
            if t == EOS:
                break
            ids.append(t)
        return out, lps

    PROMPT = [BOS, 201, 282, 57]

    # -- GENERATE ------------------------------------------------------------------------------
    def test_generate_greedy_matches_reference(self):
        streams, _ = self.session([self.generate(self.PROMPT, max_tokens=12, top_logprobs=3)], [1])
        toks = streams[1]
        ref, lps = self.ref_greedy(self.PROMPT, 12)
        self.assertEqual([t["token"] for t in toks], ref)
        for i, t in enumerate(toks):
            self.assertEqual(t["stream_id"], 1)
            self.assertAlmostEqual(t["logprob"], lps[i][t["token"]], delta=TOL)
            best = np.argsort(-lps[i])[:3]
            for b in best:
                self.assertIn(str(int(b)), t["top_logprobs"])
                self.assertAlmostEqual(t["top_logprobs"][str(int(b))], lps[i][b], delta=TOL)
            self.assertEqual(t["finish_reason"], None if i + 1 < len(toks) else "length")

    def test_end_token_is_the_last_token_with_stop(self):
        streams, _ = self.session([self.generate([BOS, 201], max_tokens=5, logit_bias={str(EOS): 100})], [1])
        self.assertEqual([(t["token"], t["finish_reason"]) for t in streams[1]], [(EOS, "stop")])
        self.assertAlmostEqual(streams[1][0]["logprob"], 0.0, delta=1e-4)  # +100 makes it certain

    def test_logit_bias_allow_list_and_ban(self):
        allowed = list(range(300, 320))
        streams, _ = self.session([self.generate(self.PROMPT, max_tokens=6, logit_bias={str(i): 100 for i in allowed})], [1])
        self.assertEqual(len(streams[1]), 6)
        self.assertTrue(all(t["token"] in allowed for t in streams[1]))

        first = self.ref_greedy(self.PROMPT, 1)[1][0]
        order = np.argsort(-first)
        streams, _ = self.session([self.generate(self.PROMPT, max_tokens=1, logit_bias={str(int(order[0])): -100})], [1])
        self.assertEqual(streams[1][0]["token"], int(order[1]))
        self.assertEqual(streams[1][0]["finish_reason"], "length")

    def test_streams_multiplexed_on_one_socket(self):
        prompts = [[BOS, 201], [BOS, 201, 282], self.PROMPT, [BOS, 80, 147]]
        cmds = [self.generate(p, sid=10 + i, max_tokens=6) for i, p in enumerate(prompts)]
        streams, _ = self.session(cmds, [10 + i for i in range(len(prompts))])
        for i, p in enumerate(prompts):
            self.assertEqual([t["token"] for t in streams[10 + i]], self.ref_greedy(p, 6)[0], f"stream {10 + i}")

    def test_sampling_with_seed_is_reproducible(self):
        cmd = self.generate(self.PROMPT, max_tokens=10, temperature=1.0, seed=1234)
        a = [t["token"] for t in self.session([cmd], [1])[0][1]]
        b = [t["token"] for t in self.session([cmd], [1])[0][1]]
        self.assertEqual(a, b)
        if EOS not in a:
            self.assertEqual(len(a), 10)

    # -- SCORE ---------------------------------------------------------------------------------
    def test_score_matches_reference(self):
        prompt, scored = [BOS, 201, 282], [57, 511, 1055, 202]
        streams, _ = self.session([("SCORE", {"model": "tinystories", "prompt": prompt, "scored": scored, "stream_id": 4})], [4])
        toks = streams[4]
        self.assertEqual([t["token"] for t in toks], scored)
        logits = self.ref.forward(prompt + scored)
        for j, t in enumerate(toks):
            want = log_softmax(logits[len(prompt) - 1 + j])[scored[j]]
            self.assertAlmostEqual(t["logprob"], want, delta=TOL)
            self.assertEqual(t["finish_reason"], None if j + 1 < len(toks) else "stop")

    def test_score_with_empty_prompt(self):
        scored = [BOS, 201, 282]
        streams, _ = self.session([("SCORE", {"model": "m", "prompt": [], "scored": scored, "stream_id": 1})], [1])
        lps = [t["logprob"] for t in streams[1]]
        logits = self.ref.forward(scored)
        self.assertEqual(lps[0], 0.0)
        for j in (1, 2):
            self.assertAlmostEqual(lps[j], log_softmax(logits[j - 1])[scored[j]], delta=TOL)

    # -- MODEL_INFO, errors --------------------------------------------------------------------
    def test_model_info(self):
        _, msgs = self.session([("MODEL_INFO", {"stream_id": 7, "model": "m", "data": {"model": "m"}})], [])
        self.assertEqual(msgs[0]["stream_id"], 7)
        info = msgs[0]["model_info"]
        self.assertEqual((info["n_vocab"], info["eos_token_id"], info["bos_token_id"]), (2048, EOS, BOS))

    def test_errors_answer_and_the_socket_keeps_serving(self):
        cmds = [
            ("NOPE", {"stream_id": 1}),
            ("GENERATE", "{not json"),
            ("GENERATE", {"model": "m", "prompt": [BOS, 99999], "stream_id": 3, "max_tokens": 4}),
            ("GENERATE", {"model": "m", "prompt": "text, not ids", "stream_id": 4}),
            ("GENERATE", {"model": "m", "prompt": [BOS], "stream_id": 5, "max_tokens": 100000}),
            ("SCORE", {"model": "m", "prompt": [BOS] * 400, "scored": [201] * 200, "stream_id": 6}),
            ("GENERATE", {"model": "m", "prompt": [BOS, 201], "stream_id": 7, "max_tokens": 2, "temperature": "hot"}),
            self.generate([BOS, 201], sid=8, max_tokens=3),
        ]
        streams, msgs = self.session(cmds, [-1, 3, 4, 5, 6, 7, 8])
        self.assertIn("Unknown command: NOPE", msgs[0]["error"])
        for sid in (-1, 3, 4, 5, 6, 7):
            self.assertEqual(len(streams[sid]), 1)
            self.assertIn("error", streams[sid][0], sid)
        self.assertIn("context", streams[5][0]["error"])
        self.assertIn("context", streams[6][0]["error"])
        self.assertEqual([t["token"] for t in streams[8]], self.ref_greedy([BOS, 201], 3)[0])
        # The HTTP side of "/" is untouched.
        self.assertEqual(self.server.get("/"), (200, "Ollama is running"))

    def test_closing_mid_stream_frees_the_slot(self):
        async def hang_up():
            async with aiohttp.ClientSession() as s:
                async with s.ws_connect(f"http://{self.endpoint}/") as ws:
                    for sid in (1, 2, 3):  # more streams than slots: one also waits in the queue
                        await ws.send_str("GENERATE " + json.dumps(
                            {"model": "m", "prompt": [BOS], "stream_id": sid, "max_tokens": 500, "temperature": 1.0}))
                    m = await asyncio.wait_for(ws.receive(), 30)  # generation has started
                    self.assertTrue(m.data.startswith("TOKEN"))

        asyncio.run(hang_up())
        # Both slots must come back: two new streams complete promptly.
        streams, _ = self.session([self.generate([BOS, 201], sid=1), self.generate([BOS, 282], sid=2)], [1, 2], timeout=30)
        self.assertEqual(streams[1][-1]["finish_reason"], "length")
        self.assertEqual(streams[2][-1]["finish_reason"], "length")
        self.assertIn("cancelled", self.server.log())

    # -- the real LMQL client ------------------------------------------------------------------
    def lmql_model(self):
        return lmql.model("tinystories", endpoint=self.endpoint, tokenizer=self.tokdir)

    def lmql_ids(self, text):
        """The ids LMQL's tokenizer gives `text` (it tokenizes client-side, then adds BOS)."""
        tok = lmql.runtime.tokenizer.tokenizer(self.tokdir)
        return [int(b) for b in tok.tokenize(text, asbytes=True)]

    def lmql_text(self, ids):
        tok = lmql.runtime.tokenizer.tokenizer(self.tokdir)
        return tok.decode(ids)

    def lmtk_ids(self, text):
        out = subprocess.run([serve_common.cli_path(), "tokenize", "-m", self.folder, "--no-bos"], input=text.encode(),
                             check=True, capture_output=True, timeout=60)
        return [int(x) for x in out.stdout.split()]

    def test_lmql_tokenizes_as_lmtk(self):
        for text in ["Once upon a time", " there was", "Lily and Tom went to the park.\nThey played."]:
            self.assertEqual(self.lmql_ids(text), self.lmtk_ids(text), text)
            self.assertEqual(self.lmql_text(self.lmql_ids(text)).strip(), text.strip())

    def test_lmql_argmax_token_limit(self):
        r = lmql.run_sync('argmax "Once upon a time[X]" where len(TOKENS(X)) < 10', model=self.lmql_model())
        x = r.variables["X"]
        self.assertTrue(x)
        greedy = self.ref_greedy([BOS] + self.lmql_ids("Once upon a time"), 12)[0]
        self.assertTrue(self.lmql_text(greedy).startswith(x), (x, self.lmql_text(greedy)))
        # At most 9 tokens: X is within the first 9 greedy tokens' text. (Tokenizing X on its own
        # would count one more: SPM's dummy "▁" in front.)
        self.assertTrue(self.lmql_text(greedy[:9]).startswith(x), (x, self.lmql_text(greedy[:9])))

    def test_lmql_stops_at(self):
        r = lmql.run_sync('argmax "Once upon a time[X]" where STOPS_AT(X, ".")', model=self.lmql_model())
        x = r.variables["X"]
        self.assertTrue(x.endswith("."), x)
        self.assertEqual(x.count("."), 1, x)
        greedy = self.ref_greedy([BOS] + self.lmql_ids("Once upon a time"), 40)[0]
        self.assertTrue(self.lmql_text(greedy).startswith(x), (x, self.lmql_text(greedy)))
        # The same words as lmtk's own greedy run of the prompt (the whole first word included).
        run = subprocess.run([serve_common.cli_path(), "run", "-m", self.folder, "-p", "Once upon a time", "-n", "40",
                              "--temp", "0"], check=True, capture_output=True, timeout=120)
        self.assertTrue(run.stdout.decode().startswith("Once upon a time" + x), (run.stdout, x))

    def test_lmql_score(self):
        prompt, values = "Once upon a time", [" there was", " the end"]
        s = lmql.score_sync(prompt, values, model=self.lmql_model())
        got = s.scores(agg="sum")
        p = [BOS] + self.lmql_ids(prompt)
        for value, score in zip(values, got):
            v = self.lmql_ids(value)
            logits = self.ref.forward(p + v)
            want = sum(log_softmax(logits[len(p) - 1 + j])[v[j]] for j in range(len(v)))
            self.assertAlmostEqual(float(score), want, delta=TOL * len(v))


if __name__ == "__main__":
    unittest.main(verbosity=2)
