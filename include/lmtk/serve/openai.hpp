#pragma once
// OpenAI-compatible endpoints: GET /v1/models, POST /v1/completions, POST /v1/chat/completions
// (each also without the /v1 prefix). Streams are SSE events ending with `data: [DONE]`.
//
// Supported: stream, stream_options.include_usage, max_tokens / max_completion_tokens,
// temperature, top_p, seed, stop, n (choices run one after another on one slot),
// presence/frequency_penalty, logit_bias (object form; llama.cpp's array form too),
// logprobs + top_logprobs (chat) / logprobs: k (legacy), echo (legacy), and llama.cpp's extra
// sampling fields (top_k, min_p, repeat_penalty, ...) and constraints (grammar, json_schema).
// Errors are OpenAI error objects.
// response_format {"type": "json_object"} constrains the output to one JSON object, and
// {"type": "json_schema", "json_schema": {"schema": ...}} to documents the schema validates
// (sample/json_schema.hpp; a schema it cannot enforce is a 400).
// `tools`, `tool_choice` (auto, none, required, a named function) and `parallel_tool_calls`:
// the calls are constrained by a grammar and answered as message.tool_calls with finish_reason
// "tool_calls" (tool_calls.hpp); tool-call and tool-result messages go back through the template.
// Differences: the default temperature is the server's (0.8, like llama.cpp).
#include <lmtk/serve/service.hpp>

#include <nlohmann/json.hpp>

#include <memory>
#include <optional>
#include <utility>
#include <string>
#include <vector>

namespace lmtk::serve::openai {

inline std::string finish_name(finish_reason f) {
    switch (f) {
        case finish_reason::max_tokens:
        case finish_reason::context_full: return "length";
        default: return "stop";
    }
}

inline json error_body(const std::string& message, int status, const std::string& param = {}, const std::string& code = {}) {
    const char* type = status == 401 ? "authentication_error"
                     : status == 404 ? "not_found_error"
                     : status == 503 ? "unavailable_error"
                     : status >= 500 ? "server_error" : "invalid_request_error";
    return json{{"error",
                 {{"message", message}, {"type", type}, {"param", param.empty() ? json(nullptr) : json(param)},
                  {"code", code.empty() ? json(nullptr) : json(code)}}}};
}

inline json bytes_of(const std::string& s) {
    json b = json::array();
    for (const char c : s) b.push_back(static_cast<unsigned char>(c));
    return b;
}

// Chat logprobs: {"content": [{token, logprob, bytes, top_logprobs: [...]}], "refusal": null}.
inline json chat_logprobs(const tokenizer_t& tok, std::span<const token_logprobs> lps) {
    json content = json::array();
    for (const auto& lp : lps) {
        const std::string t = tok.piece(lp.id);
        json top = json::array();
        for (const auto& [id, l] : lp.top) {
            const std::string ts = tok.piece(id);
            top.push_back({{"token", ts}, {"logprob", l}, {"bytes", bytes_of(ts)}, {"id", id}});
        }
        content.push_back({{"token", t}, {"logprob", lp.logprob}, {"bytes", bytes_of(t)}, {"id", lp.id}, {"top_logprobs", top}});
    }
    return {{"content", content}, {"refusal", nullptr}};
}

// Legacy completions logprobs: {"tokens", "token_logprobs", "top_logprobs": [{text: lp}], "text_offset"}.
inline json legacy_logprobs(const tokenizer_t& tok, std::span<const token_logprobs> lps, std::size_t offset0) {
    json tokens = json::array(), lp = json::array(), top = json::array(), offs = json::array();
    std::size_t off = offset0;
    for (const auto& t : lps) {
        const std::string s = tok.piece(t.id);
        tokens.push_back(s);
        lp.push_back(t.logprob);
        json m = json::object();
        for (const auto& [id, l] : t.top) m[tok.piece(id)] = l;  // pieces that render alike merge, as in OpenAI
        top.push_back(m);
        offs.push_back(off);
        off += s.size();
    }
    return {{"tokens", tokens}, {"token_logprobs", lp}, {"top_logprobs", top}, {"text_offset", offs}};
}

inline json usage_of(const std::vector<result>& rs) {
    std::size_t gen = 0;
    for (const auto& r : rs) gen += r.tokens.size();
    const std::size_t prompt = rs.empty() ? 0 : rs.front().n_prompt;
    return {{"prompt_tokens", prompt}, {"completion_tokens", gen}, {"total_tokens", prompt + gen},
            {"prompt_tokens_details", {{"cached_tokens", rs.empty() ? 0 : rs.front().n_cached}}}};
}

struct parsed {
    request rq;
    tool_request tools;  // chat: the tools the model may call
    std::size_t n = 1;
    bool stream = false;
    bool include_usage = false;
    bool echo = false;
    std::string echo_text;
    std::string model;
};

// Fields both endpoints share.
// `ordered`: the body's tools and schemas in the client's key order (ordered_fields).
template <class Service>
void read_common(Service& svc, const fields& f, parsed& p, const nlohmann::ordered_json& ordered) {
    p.rq = svc.new_request();
    read_sampling(f, p.rq.sampling);
    p.rq.sampling.logit_bias = read_logit_bias(f, "logit_bias", svc.n_vocab());
    if (auto v = f.bounded("max_tokens", -1, 1 << 30)) p.rq.max_tokens = *v;
    if (auto v = f.bounded("max_completion_tokens", -1, 1 << 30)) p.rq.max_tokens = *v;
    if (auto v = f.bounded("n_predict", -1, 1 << 30)) p.rq.max_tokens = *v;  // llama.cpp name
    if (auto v = f.bounded("n", 1, 16)) p.n = static_cast<std::size_t>(*v);
    p.rq.stop = read_stop(f);
    if (auto v = f.boolean("ignore_eos")) p.rq.ignore_eos = *v;
    if (const json* rf = f.object("response_format")) {
        const fields rff(*rf, "response_format.");
        const std::string type = rff.string("type").value_or("text");
        if (type == "json_object") {
            p.rq.grammar = json_object_grammar(svc.eng(), "response_format");
        } else if (type == "json_schema") {
            // {"type": "json_schema", "json_schema": {"name": ..., "schema": {...}, "strict": ...}}:
            // the schema is enforced by a grammar whether or not strict is set.
            const json* js = rff.object("json_schema");
            if (!js) bad_request("response_format.json_schema", "'response_format.json_schema' is required for type json_schema");
            const fields jf(*js, "response_format.json_schema.");
            const json* schema = jf.find("schema");
            if (!schema) bad_request("response_format.json_schema.schema", "'response_format.json_schema.schema' is required");
            if (const auto* o = ordered_at(ordered, {"response_format", "json_schema", "schema"}))
                p.rq.grammar = read_json_schema(svc.eng(), "response_format.json_schema.schema", *o);
            else
                p.rq.grammar = read_json_schema(svc.eng(), "response_format.json_schema.schema", *schema);
        } else if (type != "text") {
            rff.bad("type", "must be \"text\", \"json_object\" or \"json_schema\"", *rff.find("type"));
        }
    }
    read_grammar_fields(svc.eng(), f, p.rq.grammar, ordered);  // llama-server's extras on the OpenAI routes too
    p.stream = f.boolean("stream").value_or(false);
    if (const json* so = f.object("stream_options")) {
        const fields sf(*so, "stream_options.");
        p.include_usage = sf.boolean("include_usage").value_or(false);
    }
    p.model = f.string("model").value_or(svc.model_id());
    if (auto v = f.integer("best_of"); v && *v != static_cast<std::int64_t>(p.n))
        throw http_error(400, "'best_of' is not supported", "best_of");
}

// `raw`: the body's text, read again for its tools' and schemas' key order (empty: sorted).
template <class Service>
parsed read_chat(Service& svc, const json& body, std::string_view raw = {}) {
    const fields f(body);
    parsed p;
    const nlohmann::ordered_json ordered = ordered_fields(raw, body);
    read_common(svc, f, p, ordered);
    // logprobs: bool; top_logprobs 0..20 only with it (as OpenAI requires).
    const bool lp = f.boolean("logprobs").value_or(false);
    const auto top = f.bounded("top_logprobs", 0, 20);
    if (top && !lp) bad_request("top_logprobs", "'top_logprobs' needs 'logprobs': true");
    if (lp) p.rq.top_logprobs = top.value_or(0);
    const auto msgs = read_messages(f, "messages", ordered_at(ordered, {"messages"}));
    // The pre-tools function calling fields would otherwise be ignored without a word.
    for (const char* legacy : {"functions", "function_call"})
        if (f.has(legacy))
            bad_request(legacy, std::string("'") + legacy + "' (OpenAI's deprecated function calling) is not supported: send "
                                "'tools' and 'tool_choice'");
    p.tools = read_tool_request(f, ordered);
    p.rq.prompt = svc.tokenize(svc.chat_prompt(msgs, p.tools));
    svc.constrain_to_tools(p.rq, p.tools);
    for (auto& s : chat_stop_strings(svc.format())) p.rq.stop.push_back(s);
    return p;
}

template <class Service>
parsed read_completion(Service& svc, const json& body, std::string_view raw = {}) {
    const fields f(body);
    parsed p;
    read_common(svc, f, p, ordered_fields(raw, body));
    if (!f.has("max_tokens") && !f.has("max_completion_tokens") && !f.has("n_predict")) p.rq.max_tokens = 16;  // OpenAI default
    if (const json* v = f.find("logprobs")) {
        // Legacy: an integer 0..5 (alternatives per token); true is taken as 0 for lenient clients.
        if (v->is_boolean()) p.rq.top_logprobs = v->get<bool>() ? 0 : -1;
        else p.rq.top_logprobs = *f.bounded("logprobs", 0, 20);
    }
    p.echo = f.boolean("echo").value_or(false);
    if (f.has("suffix")) throw http_error(400, "'suffix' (fill-in-the-middle) is not supported by this model", "suffix");
    const json* prompt = f.find("prompt");
    if (!prompt) bad_request("prompt", "'prompt' is required");
    // A string, a token array, or a one-element array of either.
    const json* one = prompt;
    if (prompt->is_array() && prompt->size() == 1 && ((*prompt)[0].is_string() || (*prompt)[0].is_array())) one = &(*prompt)[0];
    if (one->is_string()) {
        p.echo_text = one->get<std::string>();
        p.rq.prompt = svc.tokenize(p.echo_text);
    } else if (one->is_array() && !one->empty()) {
        for (const json& t : *one) {
            if (!t.is_number_integer()) bad_request("prompt", "'prompt' must be a string or an array of token ids, got " + show(*prompt));
            p.rq.prompt.push_back(static_cast<std::int32_t>(std::clamp<std::int64_t>(t.get<std::int64_t>(), -1, 1 << 30)));
        }
        svc.check_prompt(p.rq);  // ids in range before they are decoded for `echo`
        p.echo_text = svc.tokenizer().decode(std::vector<std::int32_t>(p.rq.prompt.begin(), p.rq.prompt.end()));
    } else if (prompt->is_array() && prompt->size() > 1) {
        throw http_error(400, "only one prompt per request is supported; send several requests", "prompt");
    } else {
        bad_request("prompt", "'prompt' must be a string or an array of token ids, got " + show(*prompt));
    }
    return p;
}

// A chat answer's message, its tool calls read out when the request offered tools.
template <class Service>
std::pair<json, std::string> chat_message_of(const Service& svc, const parsed& p, const result& r) {
    json msg{{"role", "assistant"}, {"content", r.text}};
    std::string finish = finish_name(r.finish);
    if (p.tools.active()) {
        const tool_output out = svc.read_tool_output(r.text, p.tools);
        msg["content"] = out.calls.empty() || !out.content.empty() ? json(out.content) : json(nullptr);
        if (!out.calls.empty()) {
            msg["tool_calls"] = openai_tool_calls(out.calls);
            finish = "tool_calls";
        }
    }
    return {std::move(msg), std::move(finish)};
}

// ---- streaming -------------------------------------------------------------------------------
// With tools, content deltas go out as long as the text cannot be a call (tool_stream); the
// calls go out whole, one delta each, when the answer ends.
template <class Service>
class sse_chat final : public stream_handler {
public:
    sse_chat(const Service& svc, parsed p, bool chat)
        : svc_(svc), tok_(svc.tokenizer()), p_(std::move(p)), chat_(chat), id_(random_id(chat ? "chatcmpl-" : "cmpl-")),
          created_(unix_seconds()) {}

    bool begin(std::size_t choice, const write_fn& w) override {
        if (!chat_) {
            if (!p_.echo) return true;
            json c = chunk();
            c["choices"] = json::array({{{"index", choice}, {"text", p_.echo_text}, {"logprobs", nullptr}, {"finish_reason", nullptr}}});
            return send(c, w);
        }
        json c = chunk();
        c["choices"] = json::array(
            {{{"index", choice}, {"delta", {{"role", "assistant"}, {"content", ""}}}, {"logprobs", nullptr}, {"finish_reason", nullptr}}});
        return send(c, w);
    }
    bool text(std::size_t choice, std::string_view text, std::span<const token_logprobs> lp, const write_fn& w) override {
        std::string held;
        if (chat_ && p_.tools.active()) {
            if (!tools_ || tools_choice_ != choice) {
                tools_.emplace(svc_.tools_syntax(), tool_grammar_is_lazy(svc_.tools_syntax(), p_.tools));
                tools_choice_ = choice;
            }
            held = tools_->feed(text);
            text = held;
            if (text.empty() && lp.empty()) return true;
        }
        json c = chunk();
        json lpj = nullptr;
        if (p_.rq.top_logprobs >= 0 && !lp.empty()) lpj = chat_ ? chat_logprobs(tok_, lp) : legacy_logprobs(tok_, lp, offset_);
        offset_ += text.size();
        if (chat_)
            c["choices"] = json::array({{{"index", choice}, {"delta", {{"content", std::string(text)}}}, {"logprobs", lpj}, {"finish_reason", nullptr}}});
        else
            c["choices"] = json::array({{{"index", choice}, {"text", std::string(text)}, {"logprobs", lpj}, {"finish_reason", nullptr}}});
        return send(c, w);
    }
    bool end(std::size_t choice, const result& r, const write_fn& w) override {
        json c = chunk();
        std::string finish = finish_name(r.finish);
        if (chat_ && p_.tools.active()) {
            const tool_output out = svc_.read_tool_output(r.text, p_.tools);
            const std::string rest = tools_ && tools_choice_ == choice ? tools_->rest_of(out.content) : out.content;
            tools_.reset();
            if (!rest.empty()) {
                json t = chunk();
                t["choices"] = json::array({{{"index", choice}, {"delta", {{"content", rest}}}, {"logprobs", nullptr}, {"finish_reason", nullptr}}});
                if (!send(t, w)) return false;
            }
            const json calls = openai_tool_calls(out.calls);
            for (std::size_t k = 0; k < calls.size(); ++k) {
                json d = calls[k];
                d["index"] = k;
                json t = chunk();
                t["choices"] = json::array({{{"index", choice}, {"delta", {{"tool_calls", json::array({d})}}}, {"logprobs", nullptr}, {"finish_reason", nullptr}}});
                if (!send(t, w)) return false;
            }
            if (!out.calls.empty()) finish = "tool_calls";
        }
        if (chat_)
            c["choices"] = json::array({{{"index", choice}, {"delta", json::object()}, {"logprobs", nullptr}, {"finish_reason", finish}}});
        else
            c["choices"] = json::array({{{"index", choice}, {"text", ""}, {"logprobs", nullptr}, {"finish_reason", finish_name(r.finish)}}});
        offset_ = 0;
        return send(c, w);
    }
    void done(const std::vector<result>& rs, const write_fn& w) override {
        if (p_.include_usage) {
            json c = chunk();
            c["choices"] = json::array();
            c["usage"] = usage_of(rs);
            send(c, w);
        }
        w("data: [DONE]\n\n");
    }
    void error(const std::string& message, int status, const write_fn& w) override {
        w("data: " + dump(error_body(message, status)) + "\n\n");
        w("data: [DONE]\n\n");
    }

private:
    json chunk() const {
        json c{{"id", id_}, {"object", chat_ ? "chat.completion.chunk" : "text_completion"}, {"created", created_},
               {"model", p_.model}, {"system_fingerprint", "lmtk"}};
        if (p_.include_usage) c["usage"] = nullptr;
        return c;
    }
    static bool send(const json& c, const write_fn& w) { return w("data: " + dump(c) + "\n\n"); }

    const Service& svc_;
    const tokenizer_t& tok_;
    parsed p_;
    bool chat_;
    std::optional<tool_stream> tools_;  // the choice being streamed, with tools
    std::size_t tools_choice_ = 0;
    std::string id_;
    std::int64_t created_;
    std::size_t offset_ = 0;
};

// ---- routes ----------------------------------------------------------------------------------
template <class Service>
void add_routes(http::router& routes, Service& svc) {
    auto models = [&svc](const http::request&, http::response& res) {
        const auto& hp = svc.eng().model().hparams();
        json m{{"id", svc.model_id()}, {"object", "model"}, {"created", svc.created()}, {"owned_by", "lmtk"},
               {"meta", {{"n_vocab", hp.n_vocab}, {"n_ctx_train", hp.n_ctx_train}, {"n_embd", hp.n_embd},
                         {"n_ctx", svc.eng().n_ctx()}, {"size", svc.file_size()}}}};
        res.set_content(dump({{"object", "list"}, {"data", json::array({m})}}), "application/json");
    };
    routes.get("/v1/models", models);
    routes.get("/models", models);

    auto on_error = [](http::response& res, int status, const std::string& msg, const std::string& param,
                       const std::string& code) {
        res.status = status;
        res.set_content(dump(error_body(msg, status, param, code)), "application/json");
    };

    auto chat = guarded(on_error, [&svc](const http::request& req, http::response& res) {
        parsed p = read_chat(svc, parse_body(req.body), req.body);
        if (p.stream) {
            const std::size_t n = p.n;
            request rq = p.rq;
            svc.stream(res, "text/event-stream", rq, n, std::make_shared<sse_chat<Service>>(svc, std::move(p), true));
            return;
        }
        const auto rs = svc.run(p.rq, p.n);
        json choices = json::array();
        for (std::size_t i = 0; i < rs.size(); ++i) {
            auto [msg, finish] = chat_message_of(svc, p, rs[i]);
            choices.push_back({{"index", i}, {"message", std::move(msg)},
                               {"logprobs", p.rq.top_logprobs >= 0 ? chat_logprobs(svc.tokenizer(), rs[i].logprobs) : json(nullptr)},
                               {"finish_reason", finish}});
        }
        res.set_content(dump({{"id", random_id("chatcmpl-")}, {"object", "chat.completion"}, {"created", unix_seconds()},
                              {"model", p.model}, {"system_fingerprint", "lmtk"}, {"choices", choices}, {"usage", usage_of(rs)}}),
                        "application/json");
    });
    routes.post("/v1/chat/completions", chat);
    routes.post("/chat/completions", chat);

    auto completions = guarded(on_error, [&svc](const http::request& req, http::response& res) {
        parsed p = read_completion(svc, parse_body(req.body), req.body);
        if (p.stream) {
            const std::size_t n = p.n;
            request rq = p.rq;
            svc.stream(res, "text/event-stream", rq, n, std::make_shared<sse_chat<Service>>(svc, std::move(p), false));
            return;
        }
        const auto rs = svc.run(p.rq, p.n);
        json choices = json::array();
        for (std::size_t i = 0; i < rs.size(); ++i) {
            const std::string prefix = p.echo ? p.echo_text : std::string();
            choices.push_back({{"index", i}, {"text", prefix + rs[i].text},
                               {"logprobs", p.rq.top_logprobs >= 0 ? legacy_logprobs(svc.tokenizer(), rs[i].logprobs, prefix.size())
                                                                   : json(nullptr)},
                               {"finish_reason", finish_name(rs[i].finish)}});
        }
        res.set_content(dump({{"id", random_id("cmpl-")}, {"object", "text_completion"}, {"created", unix_seconds()},
                              {"model", p.model}, {"system_fingerprint", "lmtk"}, {"choices", choices}, {"usage", usage_of(rs)}}),
                        "application/json");
    });
    routes.post("/v1/completions", completions);
    routes.post("/completions", completions);
}

}  // namespace lmtk::serve::openai
