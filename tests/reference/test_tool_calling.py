"""Tool calling through `lmtk serve-model` with the real clients (openai, ollama, LangChain's
ChatOllama), on stories260K served four ways: with no chat template (lmtk's generic JSON
format) and with copies carrying real templates of the three native syntaxes: Qwen 2.5
(<tool_call> JSON, Hermes style), Llama 3.1 ({"name", "parameters"}) and Mistral Nemo
([TOOL_CALLS][...]).

A 260K-parameter story model knows nothing of tools; what is tested is that lmtk's grammar makes
whatever it writes a well-formed call when a call is required, that the answer is read back into
the APIs' tool_calls (streamed and not), and that every call names a declared tool with
arguments the tool's JSON Schema validates (checked by the `jsonschema` package, independent of
lmtk). With tool_choice "auto" the model decides: for the generic format the grammar offers a
call or a plain answer, so over 20 seeds some answers are calls and all validate. Bad tool
requests get a 400 with a reason. Only 127.0.0.1; every call has a timeout."""

import json
import os
import sys
import tempfile
import unittest
from typing import Literal

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import serve_common  # noqa: E402
from test_serve_chat_template import TEMPLATES, with_chat_template  # noqa: E402

import jsonschema  # noqa: E402
import ollama  # noqa: E402
import openai  # noqa: E402
import pydantic  # noqa: E402

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather now in a city",
    "parameters": {"type": "object",
                   "properties": {"city": {"type": "string", "maxLength": 24},
                                  "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                   "required": ["city", "unit"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "The time now in a time zone",
    "parameters": {"type": "object", "properties": {"zone": {"type": "string", "maxLength": 16}},
                   "required": ["zone"]}}}
TOOLS = [WEATHER, TIME]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
SEEDS = range(1, 21)

TEMPLATE_FILES = {"hermes": "Qwen-Qwen2.5-7B-Instruct.jinja",
                  "llama3": "meta-llama-Llama-3.1-8B-Instruct.jinja",
                  "mistral": "mistralai-Mistral-Nemo-Instruct-2407.jinja"}


def get_weather(city: str, unit: Literal["celsius", "fahrenheit"]) -> str:
    """The weather now in a city.

    Args:
        city: the city's name
        unit: the temperature unit
    """
    return f"18 degrees {unit} in {city}"


class Person(pydantic.BaseModel):
    # Only keywords that survive the ollama client's Tool model (it drops maxLength and the like).
    name: str
    age: int
    mood: Literal["happy", "sad"]


def check_call(test, name, arguments):
    test.assertIn(name, SCHEMAS)
    jsonschema.validate(arguments, SCHEMAS[name])


class ToolCallingTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        serve_common.require_serve()
        cls.tmp = tempfile.TemporaryDirectory()
        cls.models = {"generic": common.model_path("stories260K.gguf")}
        for syntax, name in TEMPLATE_FILES.items():
            with open(os.path.join(TEMPLATES, name), encoding="utf-8") as f:
                template = f.read()
            path = os.path.join(cls.tmp.name, f"stories260K-{syntax}.gguf")
            with_chat_template(common.model_path("stories260K.gguf"), path, template)
            cls.models[syntax] = path

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def client(self, s):
        return openai.OpenAI(base_url=s.url + "/v1", api_key="none", timeout=120, max_retries=0)

    def test_required_and_named_in_every_syntax(self):
        for syntax, model in self.models.items():
            with self.subTest(syntax=syntax), serve_common.Server(model=model) as s:
                client = self.client(s)
                for seed in range(1, 5):
                    r = client.chat.completions.create(model="m", messages=ASK, tools=TOOLS, tool_choice="required",
                                                       seed=seed, temperature=1.0, max_tokens=100)
                    choice = r.choices[0]
                    self.assertEqual(choice.finish_reason, "tool_calls", (syntax, seed, choice.message))
                    self.assertTrue(choice.message.tool_calls)
                    for call in choice.message.tool_calls:
                        self.assertEqual(call.type, "function")
                        self.assertTrue(call.id.startswith("call_"))
                        check_call(self, call.function.name, json.loads(call.function.arguments))
                # A named function: that one, once (parallel_tool_calls false).
                r = client.chat.completions.create(
                    model="m", messages=ASK, tools=TOOLS, seed=7, temperature=1.0, max_tokens=150,
                    tool_choice={"type": "function", "function": {"name": "get_time"}}, parallel_tool_calls=False)
                calls = r.choices[0].message.tool_calls
                self.assertEqual([c.function.name for c in calls], ["get_time"])
                check_call(self, "get_time", json.loads(calls[0].function.arguments))

    def test_streamed_calls_equal_the_unstreamed(self):
        for syntax in ("generic", "hermes"):
            with self.subTest(syntax=syntax), serve_common.Server(model=self.models[syntax]) as s:
                client = self.client(s)
                kw = dict(model="m", messages=ASK, tools=TOOLS, tool_choice="required", seed=3, temperature=1.0,
                          max_tokens=150)
                whole = client.chat.completions.create(**kw).choices[0]
                calls, finish, content = {}, None, ""
                for chunk in client.chat.completions.create(stream=True, **kw):
                    for c in chunk.choices:
                        content += c.delta.content or ""
                        for d in c.delta.tool_calls or []:
                            one = calls.setdefault(d.index, {"id": "", "name": "", "arguments": ""})
                            one["id"] += d.id or ""
                            one["name"] += d.function.name or ""
                            one["arguments"] += d.function.arguments or ""
                        finish = c.finish_reason or finish
                self.assertEqual(finish, "tool_calls")
                self.assertEqual(content, whole.message.content or "")
                got = [(calls[i]["name"], json.loads(calls[i]["arguments"])) for i in sorted(calls)]
                want = [(c.function.name, json.loads(c.function.arguments)) for c in whole.message.tool_calls]
                self.assertEqual(got, want)

    def test_auto_lets_the_model_choose_and_every_call_validates(self):
        with serve_common.Server(model=self.models["generic"]) as s:
            client = self.client(s)
            n_calls = n_text = 0
            for seed in SEEDS:
                r = client.chat.completions.create(model="m", messages=ASK, tools=TOOLS, seed=seed, temperature=1.0,
                                                   max_tokens=100)
                m = r.choices[0]
                if m.message.tool_calls:
                    n_calls += 1
                    self.assertEqual(m.finish_reason, "tool_calls")
                    for call in m.message.tool_calls:
                        check_call(self, call.function.name, json.loads(call.function.arguments))
                else:
                    n_text += 1
                    self.assertIsInstance(m.message.content, str)
                    self.assertNotIn("tool_calls", m.message.content)  # a plain answer, read out of its JSON
            print(f"auto, generic format: {n_calls} calls and {n_text} answers over {len(SEEDS)} seeds", file=sys.stderr)
            self.assertGreater(n_calls, 0)
            # tool_choice none: no grammar, never read as calls.
            r = client.chat.completions.create(model="m", messages=ASK, tools=TOOLS, tool_choice="none", seed=1,
                                               max_tokens=20)
            self.assertIsNone(r.choices[0].message.tool_calls)
            self.assertNotEqual(r.choices[0].finish_reason, "tool_calls")

    def test_ollama_and_langchain(self):
        from langchain_core.utils.function_calling import convert_to_openai_tool
        from langchain_ollama import ChatOllama
        # What LangChain sends for the Python function (Literal becomes an enum): the schema to check.
        lc_schema = convert_to_openai_tool(get_weather)["function"]["parameters"]
        self.assertEqual(lc_schema["properties"]["unit"].get("enum"), ["celsius", "fahrenheit"])
        # The ollama client sends only the schema keywords its Tool model knows (type, enum,
        # items, description): maxLength is dropped on the way, so calls are checked against
        # what it sent.
        sent = {t["function"]["name"]: ollama.Tool.model_validate(t).model_dump(exclude_none=True)["function"]["parameters"]
                for t in TOOLS}
        self.assertEqual(sent["get_weather"]["properties"]["unit"]["enum"], ["celsius", "fahrenheit"])
        with serve_common.Server(model=self.models["generic"]) as s:
            client = ollama.Client(host=s.url, timeout=120)
            n_calls = 0
            for seed in SEEDS[:10]:
                r = client.chat(model="stories", messages=ASK, tools=TOOLS,
                                options={"seed": seed, "temperature": 1.0, "num_predict": 100})
                for call in r.message.tool_calls or []:
                    n_calls += 1
                    jsonschema.validate(dict(call.function.arguments), sent[call.function.name])
            self.assertGreater(n_calls, 0)
            # Streamed, the calls arrive on a line of their own.
            streamed = [c for seed in SEEDS[:3] for part in client.chat(
                model="stories", messages=ASK, tools=TOOLS, stream=True,
                options={"seed": seed, "temperature": 1.0, "num_predict": 100}) for c in (part.message.tool_calls or [])]
            self.assertTrue(streamed)
            for call in streamed:
                jsonschema.validate(dict(call.function.arguments), sent[call.function.name])

            n_lc = n_structured = 0
            for seed in SEEDS[:6]:
                llm = ChatOllama(model="stories", base_url=s.url, temperature=1.0, seed=seed, num_predict=100)
                msg = llm.bind_tools([get_weather]).invoke("What is the weather in Paris?")
                for call in msg.tool_calls:
                    n_lc += 1
                    self.assertEqual(call["name"], "get_weather")
                    jsonschema.validate(call["args"], lc_schema)
                person = llm.with_structured_output(Person, method="function_calling").invoke("Describe a person")
                if person is not None:
                    n_structured += 1
                    self.assertIsInstance(person, Person)
            print(f"ollama: {n_calls} calls over 10 seeds; LangChain bind_tools: {n_lc} calls, "
                  f"function_calling: {n_structured} objects over 6 seeds", file=sys.stderr)
            self.assertGreater(n_lc, 0)
            self.assertGreater(n_structured, 0)

    def test_tool_results_flow_back(self):
        history = ASK + [
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\", \"unit\": \"celsius\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18 degrees"}]
        with serve_common.Server(model=self.models["hermes"]) as s:
            status, body = s.post("/apply-template", {"messages": history, "tools": TOOLS})
            self.assertEqual(status, 200, body)
            prompt = json.loads(body)["prompt"]
            self.assertIn("<tool_response>\n18 degrees\n</tool_response>", prompt)
            # Tools as sent, keys in the client's order: description before parameters, city before unit.
            self.assertIn('"properties": {"city": {"type": "string", "maxLength": 24}, "unit"', prompt)
            r = self.client(s).chat.completions.create(model="m", messages=history, tools=TOOLS, max_tokens=8, seed=1)
            self.assertTrue(r.choices[0].finish_reason)

    def test_bad_tool_requests_are_400(self):
        bad_schema = {"type": "function", "function": {"name": "f", "parameters": {
            "type": "object", "properties": {"n": {"type": "integer", "multipleOf": 3}}}}}
        cases = [
            ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "launch"}}}, "not among"),
            ({"tool_choice": "required"}, "needs 'tools'"),
            ({"tools": TOOLS, "tool_choice": "sometimes"}, "tool_choice"),
            ({"tools": [bad_schema], "tool_choice": "required"}, "multipleOf"),
            ({"tools": [{"type": "function", "function": {"description": "no name"}}]}, "name"),
            ({"tools": TOOLS, "tool_choice": "required", "response_format": {"type": "json_object"}}, "cannot be combined"),
            ({"functions": [WEATHER["function"]], "function_call": "auto"}, "deprecated function calling"),
        ]
        with serve_common.Server(model=self.models["hermes"]) as s:
            for extra, reason in cases:
                status, body = s.post("/v1/chat/completions", dict({"messages": ASK, "max_tokens": 8}, **extra))
                self.assertEqual(status, 400, (extra, body))
                self.assertIn(reason, json.loads(body)["error"]["message"])
            status, body = s.post("/api/chat", {"model": "m", "messages": ASK, "tools": [bad_schema], "stream": False})
            self.assertEqual(status, 400, body)
        # tinystories-656k cannot write '{': the generic format's calls are impossible there.
        with serve_common.Server(model=serve_common.model_path("tinystories-656k")) as s:
            status, body = s.post("/v1/chat/completions", {"messages": ASK, "tools": TOOLS, "tool_choice": "required"})
            self.assertEqual(status, 400, body)
            self.assertIn("vocabulary", json.loads(body)["error"]["message"])


if __name__ == "__main__":
    unittest.main()
