"""`lmtk serve-model` against the real OpenAI Python client (PyPI `openai`): chat completion,
streamed chat with usage, legacy completion with logprobs, models, n, seed, stop, logit_bias,
errors. Only 127.0.0.1; every call has a timeout."""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import serve_common  # noqa: E402

import openai  # noqa: E402


class OpenAITest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = serve_common.Server(["--parallel", "2", "--alias", "stories"]).__enter__()
        cls.client = openai.OpenAI(base_url=cls.server.url + "/v1", api_key="sk-none", timeout=60, max_retries=0)

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def test_models(self):
        ids = [m.id for m in self.client.models.list()]
        self.assertEqual(ids, ["stories"])

    def test_chat_completion(self):
        r = self.client.chat.completions.create(
            model="stories", messages=[{"role": "user", "content": "Once upon a time"}], max_tokens=12, temperature=0)
        c = r.choices[0]
        self.assertEqual(c.message.role, "assistant")
        self.assertTrue(c.message.content)
        self.assertIn(c.finish_reason, ("stop", "length"))
        self.assertEqual(r.object, "chat.completion")
        self.assertEqual(r.model, "stories")
        self.assertLessEqual(r.usage.completion_tokens, 12)
        self.assertEqual(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens)

    def test_streamed_chat_with_usage(self):
        stream = self.client.chat.completions.create(
            model="stories", messages=[{"role": "system", "content": "Tell a story."},
                                       {"role": "user", "content": "Lily"}],
            max_completion_tokens=16, stream=True, stream_options={"include_usage": True}, seed=7)
        text, finish, usage, ids, n = "", None, None, set(), 0
        for chunk in stream:
            n += 1
            ids.add(chunk.id)
            if chunk.usage:
                usage = chunk.usage
                self.assertEqual(chunk.choices, [])
            for ch in chunk.choices:
                text += ch.delta.content or ""
                finish = ch.finish_reason or finish
        self.assertEqual(len(ids), 1, "every chunk carries the same id")
        self.assertTrue(text)
        self.assertEqual(finish, "length")
        self.assertIsNotNone(usage)
        self.assertEqual(usage.completion_tokens, 16)

    def test_greedy_is_deterministic_and_matches_stream(self):
        kw = dict(model="stories", prompt="Once upon a time", max_tokens=20, temperature=0)
        a = self.client.completions.create(**kw).choices[0].text
        b = self.client.completions.create(**kw).choices[0].text
        s = "".join(c.choices[0].text for c in self.client.completions.create(stream=True, **kw) if c.choices)
        self.assertEqual(a, b)
        self.assertEqual(a, s)

    def test_seed_reproduces(self):
        kw = dict(model="stories", prompt="The dog", max_tokens=16, temperature=1.0, seed=1234)
        self.assertEqual(self.client.completions.create(**kw).choices[0].text,
                         self.client.completions.create(**kw).choices[0].text)

    def test_legacy_completion_logprobs(self):
        r = self.client.completions.create(model="stories", prompt="Once upon a time", max_tokens=8,
                                           logprobs=3, temperature=0)
        c = r.choices[0]
        lp = c.logprobs
        self.assertEqual(len(lp.tokens), 8)
        self.assertEqual("".join(lp.tokens), c.text)
        self.assertEqual(len(lp.token_logprobs), 8)
        self.assertTrue(all(x <= 0.0 for x in lp.token_logprobs))
        self.assertEqual(len(lp.top_logprobs), 8)
        for tok, top, lpv in zip(lp.tokens, lp.top_logprobs, lp.token_logprobs):
            self.assertLessEqual(len(top), 3)
            # greedy: the chosen token is the most likely one
            self.assertAlmostEqual(max(top.values()), lpv, places=5)
            self.assertIn(tok, top)
        self.assertEqual(lp.text_offset[0], 0)

    def test_chat_logprobs(self):
        r = self.client.chat.completions.create(model="stories", messages=[{"role": "user", "content": "Hi"}],
                                                max_tokens=5, logprobs=True, top_logprobs=2, temperature=0)
        content = r.choices[0].logprobs.content
        self.assertEqual(len(content), r.usage.completion_tokens)
        for e in content:
            self.assertLessEqual(e.logprob, 0.0)
            self.assertEqual(bytes(e.bytes).decode("utf-8", "replace"), e.token)
            self.assertEqual(len(e.top_logprobs), 2)

    def test_n_and_stop(self):
        r = self.client.completions.create(model="stories", prompt="Once upon a time", max_tokens=30, n=2,
                                           temperature=1.0, seed=3, stop=["."])
        self.assertEqual([c.index for c in r.choices], [0, 1])
        for c in r.choices:
            self.assertNotIn(".", c.text)

    def test_logit_bias_bans_token(self):
        import json
        kw = dict(model="stories", prompt="Once upon a time", max_tokens=1, temperature=0)
        first = self.client.completions.create(**kw).choices[0].text
        # The greedy token's id, from the llama.cpp-native endpoint (it reports ids).
        status, body = self.server.post("/completion", {"prompt": "Once upon a time", "n_predict": 1,
                                                        "temperature": 0, "n_probs": 1})
        self.assertEqual(status, 200, body)
        top_id = json.loads(body)["completion_probabilities"][0]["id"]
        r = self.client.completions.create(logit_bias={str(top_id): -100}, **kw)
        self.assertNotEqual(r.choices[0].text, first)

    def test_response_format_json_object(self):
        r = self.client.chat.completions.create(model="stories", messages=[{"role": "user", "content": "Lily"}],
                                                response_format={"type": "json_object"}, max_tokens=50, temperature=0)
        text = r.choices[0].message.content
        self.assertTrue(serve_common.json_object_prefix(text), text)
        with self.assertRaises(openai.BadRequestError):
            self.client.chat.completions.create(model="stories", messages=[{"role": "user", "content": "x"}],
                                                response_format={"type": "yaml"}, max_tokens=2)

    def test_errors_are_openai_errors(self):
        with self.assertRaises(openai.BadRequestError) as cm:
            self.client.chat.completions.create(model="stories", messages=[{"role": "user", "content": "x"}],
                                                max_tokens=4, temperature="hot")
        self.assertIn("temperature", str(cm.exception))
        with self.assertRaises(openai.BadRequestError):
            self.client.chat.completions.create(model="stories", messages=[], max_tokens=4)
        with self.assertRaises(openai.BadRequestError) as cm:
            self.client.completions.create(model="stories", prompt="word " * 3000, max_tokens=4)
        self.assertIn("context", str(cm.exception))
        self.assertTrue(self.server.alive())


class ApiKeyTest(unittest.TestCase):
    def test_api_key(self):
        with serve_common.Server(["--api-key", "secret"]) as s:
            bad = openai.OpenAI(base_url=s.url + "/v1", api_key="wrong", timeout=30, max_retries=0)
            with self.assertRaises(openai.AuthenticationError):
                bad.completions.create(model="m", prompt="a", max_tokens=2)
            good = openai.OpenAI(base_url=s.url + "/v1", api_key="secret", timeout=30, max_retries=0)
            self.assertTrue(good.completions.create(model="m", prompt="a", max_tokens=2).choices)
            self.assertEqual([m.id for m in bad.models.list()], ["stories260K"])  # discovery is public


if __name__ == "__main__":
    unittest.main()
