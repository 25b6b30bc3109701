#pragma once
// Ollama endpoints: GET|HEAD / ("Ollama is running"), GET /api/version, GET /api/tags,
// GET /api/ps, POST /api/show, POST /api/generate, POST /api/chat.
//
// Streaming is NDJSON and the default when `stream` is absent. Metrics (nanoseconds) and
// `context` appear only on the final `done: true` line, whose text is always empty: LangChain
// sums counts over every line and drops the final line's text.
// `options`: num_predict, temperature, top_k, top_p, min_p, seed, stop, repeat_penalty,
// repeat_last_n, presence_penalty, frequency_penalty; every other key (num_ctx, num_thread,
// mirostat, ...) is ignored, as Ollama clients expect. A known key with a wrong type is a 400.
// `format`: "json" constrains the output to one JSON object, a JSON schema object to documents
// the schema validates (sample/json_schema.hpp; one it cannot enforce is a 400).
// `tools` (chat): calls constrained by a grammar, answered as message.tool_calls (tool_calls.hpp);
// Ollama has no tool_choice, so the model decides (auto).
// Any `model` name is served by the one loaded model and echoed back.
#include <lmtk/serve/service.hpp>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace lmtk::serve::ollama {

inline std::string done_reason(finish_reason f) {
    return f == finish_reason::max_tokens || f == finish_reason::context_full ? "length" : "stop";
}

inline void write_metrics(json& j, const result& r, double load_ms) {
    auto ns = [](double ms) { return static_cast<std::int64_t>(ms * 1e6); };
    j["total_duration"] = ns(r.total_ms + load_ms);
    j["load_duration"] = ns(load_ms);
    j["prompt_eval_count"] = r.n_prompt;
    j["prompt_eval_duration"] = ns(r.prompt_ms);
    j["eval_count"] = r.tokens.size();
    j["eval_duration"] = ns(r.eval_ms);
}

struct parsed {
    request rq;
    tool_request tools;  // chat: the tools the model may call (Ollama has no tool_choice: auto)
    bool stream = true;
    bool chat = false;
    std::string model;
    std::vector<std::int32_t> prompt_tokens;  // for `context`
};

// `options` and the top-level fields shared by generate and chat.
// `ordered`: the body's tools and schemas in the client's key order (ordered_fields).
template <class Service>
void read_common(Service& svc, const fields& f, parsed& p, const nlohmann::ordered_json& ordered) {
    p.rq = svc.new_request();
    // Ollama's per-request `template` is a Go template (text/template): lmtk runs the model's
    // Jinja template and has no Go-template engine, so one is refused rather than ignored.
    if (auto t = f.string("template"); t && !t->empty())
        bad_request("template", "'template' (an Ollama Go template) is not supported: lmtk formats chats with the model's "
                                "Jinja chat template (serve-model --chat-template-file replaces it); send raw: true with a "
                                "formatted prompt instead");
    p.stream = f.boolean("stream").value_or(true);
    p.model = f.string("model").value_or(svc.model_id());
    if (const json* fmt = f.find("format")) {
        if (fmt->is_object()) {
            if (const auto* o = ordered_at(ordered, {"format"})) p.rq.grammar = read_json_schema(svc.eng(), "format", *o);
            else p.rq.grammar = read_json_schema(svc.eng(), "format", *fmt);
        } else if (fmt->is_string() && *fmt == "json") {
            p.rq.grammar = json_object_grammar(svc.eng(), "format");
        }
        else if (!(fmt->is_string() && fmt->get_ref<const std::string&>().empty()))
            f.bad("format", "must be \"json\" or a JSON schema object", *fmt);
    }
    if (const json* o = f.object("options")) {
        const fields of(*o, "options.");
        read_sampling(of, p.rq.sampling);
        if (auto v = of.bounded("num_predict", -2, 1 << 30)) p.rq.max_tokens = *v < 0 ? -1 : *v;
        p.rq.stop = read_stop(of);
    }
}

template <class Service>
parsed read_generate(Service& svc, const json& body, std::string_view raw_body = {}) {
    const fields f(body);
    parsed p;
    read_common(svc, f, p, ordered_fields(raw_body, body));
    const std::string prompt = f.string("prompt").value_or("");
    const std::string system = f.string("system").value_or("");
    const bool raw = f.boolean("raw").value_or(false);
    f.string("suffix");
    std::vector<std::int32_t> context;
    if (const json* c = f.array("context"))
        for (const json& t : *c) {
            if (!t.is_number_integer()) bad_request("context", "'context' must be an array of token ids");
            context.push_back(static_cast<std::int32_t>(std::clamp<std::int64_t>(t.get<std::int64_t>(), -1, 1 << 30)));
        }
    p.rq.prompt = context;
    if (prompt.empty() && context.empty()) return p;  // "load the model" request
    // Without a known chat template a prompt goes in as is (Ollama's "{{ .Prompt }}");
    // otherwise it is one user turn, after the system message if there is one.
    std::string text;
    if (raw || !svc.has_chat_template()) {
        text = system.empty() || raw ? prompt : system + "\n" + prompt;
    } else {
        std::vector<chat_message> msgs;
        if (!system.empty()) msgs.push_back({"system", system, {}});
        msgs.push_back({"user", prompt, {}});
        text = svc.chat_prompt(msgs);
        for (auto& s : chat_stop_strings(svc.format())) p.rq.stop.push_back(s);
    }
    const auto ids = svc.tokenize(text, context.empty());
    p.rq.prompt.insert(p.rq.prompt.end(), ids.begin(), ids.end());
    return p;
}

template <class Service>
parsed read_chat(Service& svc, const json& body, std::string_view raw = {}) {
    const fields f(body);
    parsed p;
    p.chat = true;
    const nlohmann::ordered_json ordered = ordered_fields(raw, body);
    read_common(svc, f, p, ordered);
    const auto msgs = read_messages(f, "messages", ordered_at(ordered, {"messages"}));
    p.tools = read_tool_request(f, ordered);
    p.rq.prompt = svc.tokenize(svc.chat_prompt(msgs, p.tools));
    svc.constrain_to_tools(p.rq, p.tools);
    for (auto& s : chat_stop_strings(svc.format())) p.rq.stop.push_back(s);
    return p;
}

// Ollama's message.tool_calls: arguments as an object.
inline json ollama_tool_calls(const std::vector<tool_call>& calls) {
    json out = json::array();
    for (const tool_call& c : calls)
        out.push_back({{"function", {{"name", c.name}, {"arguments", nlohmann::json::parse(c.arguments.dump())}}}});
    return out;
}

// With tools, text that may be a call is held back (tool_stream) and the calls go out on a
// line of their own when the answer ends, as Ollama sends them.
template <class Service>
class ndjson final : public stream_handler {
public:
    ndjson(const Service& svc, parsed p, double load_ms)
        : svc_(svc), p_(std::move(p)), load_ms_(load_ms),
          tools_(svc.tools_syntax(), tool_grammar_is_lazy(svc.tools_syntax(), p_.tools)) {}

    bool text(std::size_t, std::string_view text, std::span<const token_logprobs>, const write_fn& w) override {
        std::string held;
        if (p_.chat && p_.tools.active()) {
            held = tools_.feed(text);
            text = held;
        }
        if (text.empty()) return true;
        json j = head();
        if (p_.chat) j["message"] = {{"role", "assistant"}, {"content", std::string(text)}};
        else j["response"] = std::string(text);
        j["done"] = false;
        return w(dump(j) + "\n");
    }
    bool end(std::size_t, const result& r, const write_fn& w) override {
        if (p_.chat && p_.tools.active()) {
            const tool_output out = svc_.read_tool_output(r.text, p_.tools);
            const std::string rest = tools_.rest_of(out.content);
            if (!rest.empty() || !out.calls.empty()) {
                json j = head();
                j["message"] = {{"role", "assistant"}, {"content", rest}};
                if (!out.calls.empty()) j["message"]["tool_calls"] = ollama_tool_calls(out.calls);
                j["done"] = false;
                if (!w(dump(j) + "\n")) return false;
            }
        }
        return w(dump(final_line(p_, r, load_ms_)) + "\n");
    }
    void error(const std::string& message, int, const write_fn& w) override { w(dump(json{{"error", message}}) + "\n"); }

    // The last line; for a non-streamed answer (`svc` given) it carries the text and calls too.
    static json final_line(const parsed& p, const result& r, double load_ms, const std::string& text = {},
                           const Service* svc = nullptr) {
        json j{{"model", p.model}, {"created_at", rfc3339()}};
        if (p.chat) {
            j["message"] = {{"role", "assistant"}, {"content", text}};
            if (svc && p.tools.active()) {
                const tool_output out = svc->read_tool_output(text, p.tools);
                j["message"]["content"] = out.content;
                if (!out.calls.empty()) j["message"]["tool_calls"] = ollama_tool_calls(out.calls);
            }
        } else {
            j["response"] = text;
        }
        j["done"] = true;
        j["done_reason"] = done_reason(r.finish);
        if (!p.chat) {
            std::vector<std::int32_t> ctx = p.rq.prompt;
            ctx.insert(ctx.end(), r.tokens.begin(), r.tokens.end());
            j["context"] = ctx;
        }
        write_metrics(j, r, load_ms);
        return j;
    }

private:
    json head() const { return {{"model", p_.model}, {"created_at", rfc3339()}}; }
    const Service& svc_;
    parsed p_;
    double load_ms_;
    tool_stream tools_;
};

inline json error_body(const std::string& message) { return {{"error", message}}; }

template <class Service>
json details(Service& svc) {
    // Parameter count and the dominant weight type, for the "3.2B"/"Q4_0" fields clients show.
    std::uint64_t params = 0;
    std::string quant = "unknown";
    if (const gguf::file* f = svc.eng().model().source().gguf_file()) {
        std::uint64_t most = 0;
        std::map<std::string, std::uint64_t> by_type;
        for (const auto& t : f->tensors()) {
            params += t.n_elements;
            const std::string name(quant::type_name(t.type));
            if ((by_type[name] += t.n_elements) > most) {
                most = by_type[name];
                quant = name;
            }
        }
    }
    for (char& c : quant) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    char size[32];
    if (params >= 1000000000ull) std::snprintf(size, sizeof size, "%.1fB", double(params) / 1e9);
    else if (params >= 1000000ull) std::snprintf(size, sizeof size, "%.1fM", double(params) / 1e6);
    else std::snprintf(size, sizeof size, "%.1fK", double(params) / 1e3);
    return {{"parent_model", ""}, {"format", "gguf"}, {"family", svc.eng().model().hparams().arch},
            {"families", json::array({svc.eng().model().hparams().arch})}, {"parameter_size", size},
            {"quantization_level", quant}, {"parameter_count", params}};
}

// A stable stand-in for Ollama's blob digest: hashing a multi-GB file at start-up is not worth
// it, so this is FNV-1a over path, size and the server's start time, widened to 64 hex digits.
template <class Service>
std::string digest(Service& svc) {
    std::uint64_t h = 1469598103934665603ull;
    const std::string key = svc.eng().model().path() + ":" + std::to_string(svc.file_size());
    for (const char c : key) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ull;
    char buf[17];
    std::string out;
    for (int i = 0; i < 4; ++i) {
        std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
        out += buf;
        h = (h ^ std::uint64_t(i + 1)) * 1099511628211ull;
    }
    return out;
}

// Ollama's liveness answer to a plain GET / (server.hpp routes "/": a WebSocket upgrade there is
// LMTP).
inline void root(http::response& res) { res.set_content("Ollama is running", "text/plain"); }

template <class Service>
void add_routes(http::router& routes, Service& svc) {
    routes.get("/api/version", [](const http::request&, http::response& res) {
        res.set_content(dump({{"version", "0.6.0"}, {"lmtk", "0.1.0"}}), "application/json");
    });

    auto on_error = [](http::response& res, int status, const std::string& msg, const std::string&, const std::string&) {
        res.status = status;
        res.set_content(dump(error_body(msg)), "application/json");
    };

    auto entry = [&svc] {
        const std::string name = svc.model_id() + ":latest";
        return json{{"name", name}, {"model", name}, {"modified_at", rfc3339(std::chrono::system_clock::from_time_t(svc.created()))},
                    {"size", svc.file_size()}, {"digest", digest(svc)}, {"details", details(svc)}};
    };
    routes.get("/api/tags", [entry](const http::request&, http::response& res) {
        res.set_content(dump({{"models", json::array({entry()})}}), "application/json");
    });
    routes.get("/api/ps", [entry, &svc](const http::request&, http::response& res) {
        json e = entry();
        e["expires_at"] = "2262-04-11T23:47:16.854775807Z";  // never unloaded: Ollama's "forever"
        e["size_vram"] = 0;
        e["context_length"] = svc.eng().n_ctx();
        res.set_content(dump({{"models", json::array({e})}}), "application/json");
    });

    routes.post("/api/show", guarded(on_error, [&svc](const http::request& req, http::response& res) {
        const json body = parse_body(req.body);
        const fields f(body);
        const std::string name = f.string("model").value_or(f.string("name").value_or(svc.model_id()));
        const bool verbose = f.boolean("verbose").value_or(false);
        json info = json::object();
        if (const gguf::file* g = svc.eng().model().source().gguf_file()) {
            for (const auto& kv : g->metadata()) {
                const std::string key(kv.key);
                if (key == "tokenizer.chat_template") continue;  // in "template"
                if (const auto* s = kv.val.as_string()) info[key] = std::string(*s);
                else if (const auto* a = kv.val.as_array()) {
                    // Token tables are huge: listed only when verbose, like Ollama.
                    json arr = json::array();
                    if (verbose)
                        for (const auto& item : a->items) {
                            if (const auto* is = item.as_string()) arr.push_back(std::string(*is));
                            else if (auto n = item.as_number()) arr.push_back(*n);
                        }
                    info[key] = arr;
                } else if (const bool* b = std::get_if<bool>(&kv.val.data)) info[key] = *b;
                else if (auto i = kv.val.as_int(); i && kv.val.is_integer()) info[key] = *i;
                else if (auto n = kv.val.as_number()) info[key] = *n;
            }
        }
        const json d = details(svc);
        info["general.parameter_count"] = d["parameter_count"];
        const auto& s = svc.options().defaults;
        char params[256];
        std::snprintf(params, sizeof params, "temperature %g\ntop_k %d\ntop_p %g\nmin_p %g\nrepeat_penalty %g\nnum_ctx %zu",
                      double(s.temperature), s.top_k, double(s.top_p), double(s.min_p), double(s.repeat_penalty),
                      svc.eng().n_ctx());
        const std::string tmpl = svc.chat_template().empty() ? std::string("{{ .Prompt }}") : svc.chat_template();
        res.set_content(dump({{"license", ""},
                              {"modelfile", "# served by lmtk\nFROM " + svc.eng().model().path() + "\n"},
                              {"parameters", params},
                              {"template", tmpl},
                              {"details", d},
                              {"model_info", info},
                              {"capabilities", json::array({"completion", "tools"})},
                              {"modified_at", rfc3339(std::chrono::system_clock::from_time_t(svc.created()))},
                              {"lmtk", {{"model", name},
                                        {"chat_format", to_string(svc.format())},
                                        {"chat_template_kind", svc.template_kind()},
                                        {"chat_format_description", describe(svc.format())},
                                        {"format_json", "enforced: \"json\" gives one JSON object, a JSON schema documents it validates (by a grammar)"}}}}),
                        "application/json");
    }));

    auto generate = [&svc](bool chat) {
        return [&svc, chat](const http::request& req, http::response& res) {
            const json body = parse_body(req.body);
            parsed p = chat ? read_chat(svc, body, req.body) : read_generate(svc, body, req.body);
            if (!chat && p.rq.prompt.empty()) {
                // An empty prompt loads the model (already loaded here) and says so.
                res.set_content(dump({{"model", p.model}, {"created_at", rfc3339()}, {"response", ""}, {"done", true},
                                      {"done_reason", "load"}}),
                                "application/json");
                return;
            }
            const double load_ms = svc.options().load_ms;
            if (p.stream) {
                const request rq = p.rq;
                svc.stream(res, "application/x-ndjson", rq, 1, std::make_shared<ndjson<Service>>(svc, std::move(p), load_ms));
                return;
            }
            const auto rs = svc.run(p.rq, 1);
            res.set_content(dump(ndjson<Service>::final_line(p, rs.front(), load_ms, rs.front().text, &svc)), "application/json");
        };
    };
    routes.post("/api/generate", guarded(on_error, generate(false)));
    routes.post("/api/chat", guarded(on_error, generate(true)));
}

}  // namespace lmtk::serve::ollama
