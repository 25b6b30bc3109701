"""Structured output through `lmtk serve-model` with the real clients: JSON schemas (OpenAI
response_format json_schema and client.chat.completions.parse with a Pydantic model, Ollama
format=<schema>, LangChain ChatOllama.with_structured_output with json_schema and json_mode,
llama.cpp /completion json_schema) and GBNF grammars (/completion grammar),
over 20 seeds on stories260K. Every finished output is checked by an independent validator:
the `jsonschema` package for schemas, Python's json module and hand-written checks for the
grammars. Outputs cut by the token limit must still be a prefix the grammar allows, which the
validators cannot check; their share is printed. Impossible constraints get a 400 with a
reason: a grammar that does not parse, a schema keyword lmtk cannot enforce, and JSON on
tinystories-656k, whose vocabulary cannot write '{'. Only 127.0.0.1; every call has a timeout."""

import json
import os
import re
import sys
import unittest
from typing import List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import serve_common  # noqa: E402

import jsonschema  # noqa: E402
import ollama  # noqa: E402
import openai  # noqa: E402
import pydantic  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
GRAMMARS = os.path.join(os.path.dirname(HERE), "data", "grammars")
SEEDS = range(1, 21)


class Pet(pydantic.BaseModel):
    name: str
    kind: str
    age: int


class Person(pydantic.BaseModel):
    name: str
    age: int
    happy: bool
    nickname: Optional[str] = None
    pets: List[Pet] = pydantic.Field(default_factory=list, max_length=2)


SCHEMAS = {
    "person": Person.model_json_schema(),
    "enum": {"type": "object", "properties": {"colour": {"enum": ["red", "green", "blue"]},
                                                "count": {"type": "integer"}},
             "required": ["colour", "count"], "additionalProperties": False},
    "array": {"type": "array", "items": {"type": "string", "maxLength": 8}, "minItems": 1, "maxItems": 3},
    "bounded": {"type": "object", "properties": {"age": {"type": "integer", "minimum": 18, "maximum": 99},
                                                 "score": {"type": "number", "minimum": 0, "maximum": 1},
                                                 "delta": {"type": "integer", "exclusiveMinimum": -5, "exclusiveMaximum": 5}},
                "required": ["age", "score", "delta"]},
    "date": {"type": "object", "properties": {"when": {"type": "string", "format": "date"},
                                              "score": {"type": "number"}},
             "required": ["when", "score"]},
}


def arithmetic_sentence(text):
    """A recursive-descent reader of arithmetic.gbnf written from the grammar (independent of
    lmtk's matcher): root ::= (expr "=" ws term "\\n")+, blanks [ \\t\\n]* after names,
    numbers and closing brackets (so a record may span lines)."""
    pos = 0

    def ws():
        nonlocal pos
        while pos < len(text) and text[pos] in " \t\n":
            pos += 1

    def term():
        nonlocal pos
        if pos < len(text) and "a" <= text[pos] <= "z":
            pos += 1
            while pos < len(text) and (text[pos].isdigit() or "a" <= text[pos] <= "z" or text[pos] == "_"):
                pos += 1
            ws()
            return True
        if pos < len(text) and text[pos].isdigit():
            while pos < len(text) and text[pos].isdigit():
                pos += 1
            ws()
            return True
        if pos < len(text) and text[pos] == "(":
            pos += 1
            ws()
            if not expr() or pos >= len(text) or text[pos] != ")":
                return False
            pos += 1
            ws()
            return True
        return False

    def expr():
        nonlocal pos
        if not term():
            return False
        while pos < len(text) and text[pos] in "-+*/":
            pos += 1
            if not term():
                return False
        return True

    records = 0
    while pos < len(text):
        if not expr() or pos >= len(text) or text[pos] != "=":
            return False
        pos += 1
        ws()
        if not term():
            return False
        # The record's "\n" is the last of the blanks after its term (the next record cannot
        # begin with a blank), so the greedy run of blanks must end with one.
        if text[pos - 1] != "\n":
            return False
        records += 1
    return records > 0


class StructuredOutputTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = serve_common.Server(["--parallel", "2", "--alias", "stories"]).__enter__()
        cls.openai = openai.OpenAI(base_url=cls.server.url + "/v1", api_key="sk-none", timeout=120, max_retries=0)
        cls.ollama = ollama.Client(host=cls.server.url, timeout=120)

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def completion(self, body):
        status, raw = self.server.post("/completion", body, timeout=120)
        return status, json.loads(raw)

    def check_schema_outputs(self, name, schema, outputs):
        finished = 0
        for text, stopped in outputs:
            if stopped:
                finished += 1
                jsonschema.validate(json.loads(text), schema)
        print(f"{name}: {finished} of {len(outputs)} outputs finished within the token limit, all valid",
              file=sys.stderr)
        # The model is tiny and untrained for JSON: it must still close most documents.
        self.assertGreaterEqual(finished, len(outputs) // 2, name)

    def test_llamacpp_json_schema(self):
        for name, schema in SCHEMAS.items():
            outs = []
            for seed in SEEDS:
                status, r = self.completion({"prompt": "Once upon a time", "json_schema": schema, "n_predict": 160,
                                             "seed": seed, "temperature": 1.0})
                self.assertEqual(status, 200, r)
                outs.append((r["content"], r["stop_type"] == "eos"))
            self.check_schema_outputs("/completion json_schema " + name, schema, outs)

    def test_openai_response_format_json_schema(self):
        schema = SCHEMAS["enum"]
        outs = []
        for seed in SEEDS:
            r = self.openai.chat.completions.create(
                model="stories", messages=[{"role": "user", "content": "Pick a colour"}], seed=seed, max_tokens=160,
                response_format={"type": "json_schema", "json_schema": {"name": "pick", "schema": schema, "strict": True}})
            outs.append((r.choices[0].message.content, r.choices[0].finish_reason == "stop"))
        self.check_schema_outputs("openai json_schema", schema, outs)

    def test_openai_parse_pydantic(self):
        parsed = 0
        for seed in SEEDS:
            try:
                r = self.openai.chat.completions.parse(
                    model="stories", messages=[{"role": "user", "content": "Describe a person"}], seed=seed,
                    max_tokens=200, response_format=Person)
            except openai.LengthFinishReasonError:
                continue  # cut by max_tokens: the client refuses to parse; the prefix is checked elsewhere
            self.assertIsInstance(r.choices[0].message.parsed, Person)
            parsed += 1
        print(f"openai parse(Person): {parsed} of 20 parsed", file=sys.stderr)
        self.assertGreaterEqual(parsed, 10)

    def test_ollama_format_schema(self):
        schema = Person.model_json_schema()
        outs = []
        for seed in SEEDS:
            r = self.ollama.chat(model="stories", messages=[{"role": "user", "content": "A person"}], format=schema,
                                 options={"seed": seed, "num_predict": 200, "temperature": 1.0})
            outs.append((r.message.content, r.done_reason == "stop"))
        self.check_schema_outputs("ollama format=schema", schema, outs)
        for text, stopped in outs:
            if stopped:
                Person.model_validate_json(text)

    def test_langchain_with_structured_output(self):
        from langchain_ollama import ChatOllama
        for method in ("json_schema", "json_mode"):
            ok = 0
            for seed in range(1, 6):
                llm = ChatOllama(model="stories", base_url=self.server.url, temperature=1.0, seed=seed, num_predict=200)
                if method == "json_schema":
                    person = llm.with_structured_output(Person, method=method).invoke("Describe a person")
                    self.assertIsInstance(person, Person)
                else:
                    # JSON mode enforces an object, not the schema: LangChain parses it as JSON.
                    out = llm.with_structured_output(Person.model_json_schema(), method=method).invoke("Describe a person as JSON")
                    self.assertIsInstance(out, dict)
                ok += 1
            self.assertEqual(ok, 5, method)

    def test_gbnf_grammars(self):
        def grammar(name):
            with open(os.path.join(GRAMMARS, name + ".gbnf"), encoding="utf-8") as f:
                return f.read()

        line = re.compile(r"^- [^\r\n]+$")
        checks = {
            "json": lambda t: isinstance(json.loads(t), dict),
            "list": lambda t: t.endswith("\n") and all(line.match(x) for x in t[:-1].split("\n")),
            "arithmetic": arithmetic_sentence,
        }
        for name, check in checks.items():
            finished = 0
            for seed in SEEDS:
                status, r = self.completion({"prompt": "Once upon a time", "grammar": grammar(name), "n_predict": 120,
                                             "seed": seed, "temperature": 1.0})
                self.assertEqual(status, 200, r)
                if r["stop_type"] == "eos":
                    finished += 1
                    self.assertTrue(check(r["content"]), (name, r["content"]))
            print(f"/completion grammar {name}: {finished} of 20 finished", file=sys.stderr)
            self.assertGreater(finished, 0, name)

    def test_openai_routes_take_llamacpp_grammar(self):
        # llama-server reads `grammar` / `json_schema` on its OpenAI routes too; so does lmtk.
        for seed in range(1, 6):
            r = self.openai.chat.completions.create(
                model="stories", messages=[{"role": "user", "content": "Yes or no?"}], seed=seed, max_tokens=8,
                extra_body={"grammar": 'root ::= "yes" | "no"'})
            self.assertIn(r.choices[0].message.content, ("yes", "no"))
            self.assertEqual(r.choices[0].finish_reason, "stop")
        with self.assertRaises(openai.BadRequestError) as e:
            self.openai.chat.completions.create(
                model="stories", messages=[{"role": "user", "content": "x"}], response_format={"type": "json_object"},
                extra_body={"grammar": 'root ::= "a"'})
        self.assertIn("one output constraint", str(e.exception))

    def test_impossible_constraints_are_400(self):
        status, r = self.completion({"prompt": "x", "grammar": "root ::= missing\n"})
        self.assertEqual(status, 400)
        self.assertIn("never defined", json.dumps(r))
        status, r = self.completion({"prompt": "x", "json_schema": {"type": "string", "pattern": "^a+$"}})
        self.assertEqual(status, 400)
        self.assertIn("pattern", json.dumps(r))
        with self.assertRaises(openai.BadRequestError) as e:
            self.openai.chat.completions.create(
                model="stories", messages=[{"role": "user", "content": "x"}],
                response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "number",
                                                                                                  "minimum": 0.5}}})
        self.assertIn("minimum", str(e.exception))
        with self.assertRaises(ollama.ResponseError) as e:
            self.ollama.generate(model="stories", prompt="x", format={"type": "object", "allOf": [{}]})
        self.assertEqual(e.exception.status_code, 400)

    def test_vocabulary_without_braces_is_400(self):
        # tinystories-656k's vocabulary cannot spell '{': every JSON constraint is refused.
        with serve_common.Server(model=serve_common.model_path("tinystories-656k")) as s:
            status, body = s.post("/completion", {"prompt": "x", "json_schema": {"type": "object"}})
            self.assertEqual(status, 400, body)
            self.assertIn("vocabulary", body)
            status, body = s.post("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}],
                                                          "response_format": {"type": "json_object"}})
            self.assertEqual(status, 400, body)
            status, body = s.post("/api/generate", {"model": "m", "prompt": "x", "format": "json", "stream": False})
            self.assertEqual(status, 400, body)
            # A grammar the vocabulary can begin ("a") but not continue ('{'): an error naming the
            # dead end, never an unfinished sentence answered as a success.
            grammar = 'root ::= "a" [{] "b"\n'
            status, body = s.post("/completion", {"prompt": "x", "grammar": grammar, "n_predict": 8})
            self.assertEqual(status, 400, body)
            self.assertIn("no token continues it", body)
            status, body = s.post("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}],
                                                          "grammar": grammar, "max_tokens": 8})
            self.assertEqual(status, 400, body)
            status, body = s.post("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}],
                                                          "grammar": grammar, "max_tokens": 8, "stream": True})
            self.assertEqual(status, 200, body)  # streamed: the status was sent; the error is the last event
            self.assertIn("no token continues it", body)
            self.assertTrue(body.rstrip().endswith("data: [DONE]"), body)


if __name__ == "__main__":
    unittest.main()
