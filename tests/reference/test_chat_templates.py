"""Chat templates: lmtk's Jinja interpreter against transformers' own (Python jinja2, compiled
the way apply_chat_template compiles it: sandboxed, trim_blocks, lstrip_blocks, loop controls,
HF's tojson, raise_exception, strftime_now).

Templates: the ~70 real ones in tests/data/chat_templates/ (llama.cpp's models/templates, from
the llama-cpp-python sdist: Llama 3.x, Qwen 2.5/3, Mistral, DeepSeek, Gemma, Phi, Granite,
Hermes and Command-R tool use, ...). Conversations: system + user, multi-turn, assistant prefill,
tools with a tool call and its result. For each template and conversation, both render; then
  - a wrong render (lmtk's text differs from Python's, or lmtk renders where Python raises) fails;
  - a template passes when every conversation renders byte for byte the same (or both raise);
  - at least 90% of the templates must pass; the others must fail in lmtk with an error.
The templates that do not pass are printed with lmtk's error, for README's list.
"""

import json
import os
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
TEMPLATES = os.path.join(os.path.dirname(HERE), "data", "chat_templates")

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"},
                                                    "unit": {"type": "string", "enum": ["C", "F"]}},
                   "required": ["city"]}}}]

CONVERSATIONS = {
    "system_user": dict(messages=[{"role": "system", "content": "You are a helpful assistant."},
                                  {"role": "user", "content": "Hello! What is 2+2?"}], add_generation_prompt=True),
    "multi_turn": dict(messages=[{"role": "user", "content": "Hi there"},
                                 {"role": "assistant", "content": "Hello! How can I help you today?"},
                                 {"role": "user", "content": "Tell me a joke about über-fast llamas 🦙."}],
                       add_generation_prompt=True),
    "prefill": dict(messages=[{"role": "system", "content": "Answer briefly."},
                              {"role": "user", "content": "Name a colour."},
                              {"role": "assistant", "content": "Blue"}], add_generation_prompt=False),
    "tools": dict(messages=[{"role": "system", "content": "You can call tools."},
                            {"role": "user", "content": "What's the weather in Paris?"},
                            {"role": "assistant", "content": "", "tool_calls": [
                                {"id": "call_1", "type": "function",
                                 "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "C"}}}]},
                            {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "22 degrees, sunny"},
                            {"role": "user", "content": "Thanks!"}],
                  tools=TOOLS, add_generation_prompt=True),
}
SPECIALS = dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>")


def python_render(source, ctx):
    from transformers.utils.chat_template_utils import _compile_jinja_template
    compiled = _compile_jinja_template(source)
    return compiled.render(**ctx)


class ChatTemplatesTest(unittest.TestCase):
    def test_against_transformers(self):
        names = sorted(f for f in os.listdir(TEMPLATES) if f.endswith(".jinja"))
        self.assertGreaterEqual(len(names), 60)
        contexts = [dict(c, **SPECIALS) for c in CONVERSATIONS.values()]
        wrong, failed, passed = [], [], []
        with tempfile.TemporaryDirectory() as tmp:
            ctx_path = os.path.join(tmp, "contexts.json")
            with open(ctx_path, "w", encoding="utf-8") as f:
                json.dump(contexts, f, ensure_ascii=False)
            for name in names:
                path = os.path.join(TEMPLATES, name)
                with open(path, encoding="utf-8") as f:
                    source = f.read()
                r = common.run_cli(["render-template", path, ctx_path], timeout=120)
                ours = json.loads(r.text())
                ok = True
                errors = []
                for conv, ctx, mine in zip(CONVERSATIONS, contexts, ours):
                    try:
                        want = python_render(source, ctx)
                    except Exception as e:  # noqa: BLE001 - a template may raise by design
                        want = None
                        if "text" in mine:
                            wrong.append((name, conv, "python raised %r, lmtk rendered" % (str(e)[:80],)))
                            ok = False
                        continue
                    if "text" in mine:
                        if mine["text"] != want:
                            wrong.append((name, conv, first_difference(want, mine["text"])))
                            ok = False
                    else:
                        errors.append(mine["error"])
                        ok = False
                if ok:
                    passed.append(name)
                elif errors:
                    failed.append((name, errors[0]))
        for name, err in failed:
            print(f"  not supported: {name}: {err}")
        for name, conv, diff in wrong:
            print(f"  WRONG RENDER: {name} [{conv}]: {diff}")
        print(f"{len(passed)}/{len(names)} templates render byte-identically to transformers for every conversation")
        self.assertEqual(wrong, [], "lmtk rendered text that differs from transformers'")
        self.assertGreaterEqual(len(passed), int(0.9 * len(names) + 0.999))


def first_difference(a, b):
    k = 0
    while k < min(len(a), len(b)) and a[k] == b[k]:
        k += 1
    return "at %d: python %r / lmtk %r" % (k, a[max(0, k - 20):k + 40], b[max(0, k - 20):k + 40])


if __name__ == "__main__":
    unittest.main(verbosity=2)
