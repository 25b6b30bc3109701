"""serve-model applies the model's own Jinja chat template (tokenize/jinja/template.hpp).

stories260K.gguf carries no template, so the test writes a copy that carries one
(`tokenizer.chat_template` = Qwen 2.5's real template, from tests/data/chat_templates) and
serves it. Then:
  - /props and /api/show say the model's Jinja template is in use;
  - llama.cpp's POST /apply-template returns exactly what transformers' apply_chat_template
    renders for the same messages (Python jinja2), minus nothing: Qwen's template writes no BOS;
  - OpenAI /v1/chat/completions and Ollama /api/chat answer (200) with that prompt;
  - --chat-template-file overrides the model's template (Llama 3.1's, whose rendered text starts
    with the BOS text: the server drops it, since the tokenizer adds BOS itself);
  - a template that raises (raise_exception) gives a 400 with its message, not a crash.
"""

import json
import os
import struct
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import serve_common  # noqa: E402
from gguf_reader import GGUFFile, _Cursor  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
TEMPLATES = os.path.join(os.path.dirname(HERE), "data", "chat_templates")
MESSAGES = [{"role": "system", "content": "You are a storyteller."},
            {"role": "user", "content": "Tell me about Lily."}]


def with_chat_template(src, dst, template):
    """Copy GGUF `src` to `dst` with one more KV, tokenizer.chat_template = template."""
    g = GGUFFile(src)
    cur = _Cursor(memoryview(g.data))
    cur.take(8)
    n_tensors, n_kv = cur.unpack("<q"), cur.unpack("<q")
    kv_start = cur.pos
    for _ in range(n_kv):
        cur.string()
        g._read_value(cur, cur.unpack("<i"))
    kv_end = cur.pos
    for _ in range(n_tensors):
        cur.string()
        n_dims = cur.unpack("<I")
        cur.take(8 * n_dims + 4 + 8)
    infos_end = cur.pos
    key, val = b"tokenizer.chat_template", template.encode("utf-8")
    extra = struct.pack("<Q", len(key)) + key + struct.pack("<i", 8) + struct.pack("<Q", len(val)) + val
    head = g.data[:8] + struct.pack("<qq", n_tensors, n_kv + 1) + g.data[kv_start:kv_end] + extra + g.data[kv_end:infos_end]
    a = g.alignment
    head += b"\0" * ((-len(head)) % a)
    with open(dst, "wb") as f:
        f.write(head + g.data[g.data_offset:])


def render_like_transformers(template, messages, **kw):
    from transformers.utils.chat_template_utils import _compile_jinja_template
    return _compile_jinja_template(template).render(messages=messages, add_generation_prompt=True,
                                                    bos_token="<s>", eos_token="</s>", **kw)


class ServeChatTemplateTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        serve_common.require_serve()
        cls.tmp = tempfile.TemporaryDirectory()
        with open(os.path.join(TEMPLATES, "Qwen-Qwen2.5-7B-Instruct.jinja"), encoding="utf-8") as f:
            cls.qwen = f.read()
        cls.model = os.path.join(cls.tmp.name, "stories260K-qwen-template.gguf")
        with_chat_template(common.model_path("stories260K.gguf"), cls.model, cls.qwen)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_model_template(self):
        with serve_common.Server(model=self.model) as s:
            status, body = s.get("/props")
            self.assertEqual(status, 200, body)
            self.assertIn("jinja", json.loads(body)["chat_template_kind"])
            status, body = s.post("/api/show", {"model": "x"})
            self.assertEqual(status, 200, body)
            self.assertIn("jinja", json.loads(body)["lmtk"]["chat_template_kind"])
            status, body = s.post("/apply-template", {"messages": MESSAGES})
            self.assertEqual(status, 200, body)
            self.assertEqual(json.loads(body)["prompt"], render_like_transformers(self.qwen, MESSAGES))
            status, body = s.post("/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 8, "temperature": 0})
            self.assertEqual(status, 200, body)
            self.assertTrue(json.loads(body)["choices"][0]["message"]["content"])
            status, body = s.post("/api/chat", {"model": "x", "messages": MESSAGES, "stream": False,
                                                "options": {"num_predict": 8, "temperature": 0}})
            self.assertEqual(status, 200, body)

    def test_tools_and_tool_calls(self):
        # OpenAI's form: the call's arguments as a JSON string, content null; the template sees
        # them as transformers documents (arguments a dict, content None). Keys in the order a
        # client writes them (not sorted): the template must see that order, as transformers does.
        tools = [{"type": "function",
                  "function": {"name": "get_weather", "description": "Weather now",
                               "parameters": {"type": "object", "properties": {"unit": {"type": "string"},
                                                                               "city": {"type": "string"}},
                                              "required": ["city"]}}}]
        sent = MESSAGES + [
            {"role": "assistant", "content": None,
             "tool_calls": [{"id": "call_1", "type": "function",
                             "function": {"name": "get_weather", "arguments": "{\"unit\": \"C\", \"city\": \"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"}]
        seen = json.loads(json.dumps(sent))
        seen[2]["tool_calls"][0]["function"]["arguments"] = {"unit": "C", "city": "Paris"}
        with serve_common.Server(model=self.model) as s:
            status, body = s.post("/apply-template", {"messages": sent, "tools": tools})
            self.assertEqual(status, 200, body)
            got = json.loads(body)["prompt"]
            self.assertEqual(got, render_like_transformers(self.qwen, seen, tools=tools))
            self.assertIn("get_weather", got)
            self.assertIn("<tool_response>\n18C\n</tool_response>", got)
            status, body = s.post("/v1/chat/completions", {"messages": sent, "tools": tools, "max_tokens": 4})
            self.assertEqual(status, 200, body)
            status, body = s.post("/v1/chat/completions", {"messages": MESSAGES, "tools": [1], "max_tokens": 4})
            self.assertEqual(status, 400, body)

    def test_template_file_override_and_bos(self):
        path = os.path.join(TEMPLATES, "meta-llama-Llama-3.1-8B-Instruct.jinja")
        with open(path, encoding="utf-8") as f:
            llama = f.read()
        with serve_common.Server(["--chat-template-file", path], model=self.model) as s:
            status, body = s.post("/apply-template", {"messages": MESSAGES})
            self.assertEqual(status, 200, body)
            want = render_like_transformers(llama, MESSAGES)
            self.assertTrue(want.startswith("<s>"))
            self.assertEqual(json.loads(body)["prompt"], want[len("<s>"):])

    def test_raising_template(self):
        with tempfile.NamedTemporaryFile("w", suffix=".jinja", delete=False) as f:
            f.write("{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}x")
        try:
            with serve_common.Server(["--chat-template-file", f.name], model=self.model) as s:
                status, body = s.post("/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 4})
                self.assertEqual(status, 400, body)
                self.assertIn("System role not supported", body)
                self.assertTrue(s.alive())
        finally:
            os.unlink(f.name)


if __name__ == "__main__":
    unittest.main(verbosity=2)
