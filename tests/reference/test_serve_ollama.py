"""`lmtk serve-model` against the real Ollama Python client (PyPI `ollama`) and LangChain
(`langchain-ollama`: OllamaLLM, ChatOllama; `langchain-community`: Llamafile, which speaks
llama.cpp's /completion). Only 127.0.0.1; every call has a timeout."""

import json
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import serve_common  # noqa: E402

import ollama  # noqa: E402


class OllamaTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = serve_common.Server(["--parallel", "2"]).__enter__()
        cls.client = ollama.Client(host=cls.server.url, timeout=60)

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def test_root_and_version(self):
        status, body = self.server.get("/")
        self.assertEqual((status, body), (200, "Ollama is running"))
        status, body = self.server.get("/api/version")
        self.assertIn("version", json.loads(body))

    def test_list(self):
        models = self.client.list().models
        self.assertEqual(len(models), 1)
        self.assertEqual(models[0].model, "stories260K:latest")
        self.assertEqual(models[0].details.format, "gguf")
        self.assertGreater(models[0].size, 0)

    def test_show(self):
        r = self.client.show("stories260K")
        self.assertEqual(r.details.family, "llama")
        self.assertIn("general.architecture", r.modelinfo)
        self.assertIn("completion", r.capabilities)
        raw = json.loads(self.server.post("/api/show", {"model": "stories260K"})[1])
        self.assertEqual(raw["lmtk"]["chat_format"], "plain")  # stories260K has no chat template

    def test_generate(self):
        r = self.client.generate(model="stories260K", prompt="Once upon a time",
                                 options={"num_predict": 10, "temperature": 0, "mirostat": 0, "f16_kv": True})
        self.assertTrue(r.response)
        self.assertTrue(r.done)
        self.assertEqual(r.done_reason, "length")
        self.assertEqual(r.eval_count, 10)
        self.assertGreater(r.eval_duration, 0)
        self.assertGreater(r.prompt_eval_count, 0)
        self.assertGreater(len(r.context), r.prompt_eval_count)

    def test_generate_stream_metrics_only_on_last_line(self):
        parts = list(self.client.generate(model="stories260K", prompt="Lily", stream=True,
                                          options={"num_predict": 8, "seed": 5, "temperature": 0.7}))
        self.assertTrue(parts[-1].done)
        self.assertEqual(parts[-1].response, "")
        self.assertEqual(parts[-1].eval_count, 8)
        for p in parts[:-1]:
            self.assertFalse(p.done)
            self.assertIsNone(p.eval_count)
            self.assertIsNone(p.total_duration)
        self.assertTrue("".join(p.response for p in parts))

    def test_chat(self):
        r = self.client.chat(model="stories260K", messages=[{"role": "user", "content": "Tell me a story"}],
                             options={"num_predict": 10})
        self.assertEqual(r.message.role, "assistant")
        self.assertTrue(r.message.content)
        self.assertTrue(r.done)

    def test_streamed_chat(self):
        parts = list(self.client.chat(model="stories260K", stream=True,
                                      messages=[{"role": "system", "content": "You tell stories."},
                                                {"role": "user", "content": "A cat"}],
                                      options={"num_predict": 12}))
        self.assertTrue(parts[-1].done)
        self.assertEqual(parts[-1].message.content, "")
        self.assertEqual(parts[-1].eval_count, 12)
        self.assertTrue("".join(p.message.content for p in parts))

    def test_format_json_is_enforced(self):
        # A story model left alone writes prose; constrained, every output is a JSON object or a
        # prefix of one (cut by num_predict), checked by Python's json module (serve_common).
        for fmt in ("json", {"type": "object", "properties": {"name": {"type": "string"}}}):
            for options in ({"num_predict": 60, "temperature": 0}, {"num_predict": 60, "temperature": 1.0, "seed": 7}):
                r = self.client.generate(model="stories260K", prompt="Once upon a time", format=fmt, options=options)
                self.assertTrue(serve_common.json_object_prefix(r.response), r.response)
                if r.done_reason == "stop":
                    self.assertIsInstance(json.loads(r.response), dict)
        free = self.client.generate(model="stories260K", prompt="Once upon a time", options={"num_predict": 20, "temperature": 0})
        self.assertFalse(serve_common.json_object_prefix(free.response))  # the constraint did the work
        chat = self.client.chat(model="stories260K", messages=[{"role": "user", "content": "Lily"}], format="json",
                                options={"num_predict": 40, "temperature": 0})
        self.assertTrue(serve_common.json_object_prefix(chat.message.content), chat.message.content)
        # With room to finish, a closed object ends the generation ("stop", not "length").
        r = self.client.generate(model="stories260K", prompt="Once upon a time", format="json",
                                 options={"num_predict": 400, "temperature": 0.7, "seed": 11, "top_k": 5})
        self.assertTrue(serve_common.json_object_prefix(r.response), r.response)
        if r.done_reason == "stop":
            self.assertIsInstance(json.loads(r.response), dict)

    def test_errors(self):
        with self.assertRaises(ollama.ResponseError) as cm:
            self.client.generate(model="stories260K", prompt="x", options={"num_predict": "many"})
        self.assertEqual(cm.exception.status_code, 400)
        self.assertIn("num_predict", cm.exception.error)
        status, body = self.server.post("/api/chat", "{not json")
        self.assertEqual(status, 400)
        self.assertIn("error", json.loads(body))
        # A Go template per request cannot be run: refused by name, never silently ignored.
        with self.assertRaises(ollama.ResponseError) as cm:
            self.client.generate(model="stories260K", prompt="x", template="{{ .Prompt }}")
        self.assertEqual(cm.exception.status_code, 400)
        self.assertIn("Go template", cm.exception.error)


class LangChainTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = serve_common.Server([]).__enter__()

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def test_ollama_llm(self):
        from langchain_ollama import OllamaLLM
        llm = OllamaLLM(model="stories260K", base_url=self.server.url, num_predict=10, temperature=0,
                        client_kwargs={"timeout": 60})
        text = llm.invoke("Once upon a time")
        self.assertTrue(text)
        chunks = list(llm.stream("Once upon a time"))
        self.assertEqual("".join(chunks), text)  # greedy: the same text either way

    def test_chat_ollama(self):
        from langchain_ollama import ChatOllama
        chat = ChatOllama(model="stories260K", base_url=self.server.url, num_predict=10,
                          client_kwargs={"timeout": 60})
        msg = chat.invoke("Tell me a story")
        self.assertTrue(msg.content)
        self.assertEqual(msg.usage_metadata["output_tokens"], 10)  # counts only on the final line

    def test_llamafile(self):
        from langchain_community.llms.llamafile import Llamafile
        llm = Llamafile(base_url=self.server.url, n_predict=10, temperature=0, request_timeout=60)
        text = llm.invoke("Once upon a time")
        self.assertTrue(text)
        streamed = "".join(Llamafile(base_url=self.server.url, n_predict=10, temperature=0, streaming=True,
                                     request_timeout=60).stream("Once upon a time"))
        self.assertTrue(streamed)


if __name__ == "__main__":
    unittest.main()
