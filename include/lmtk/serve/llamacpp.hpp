#pragma once
// llama.cpp-native endpoints: GET /health, GET /props, POST /tokenize, POST /detokenize,
// POST /apply-template, POST /completion. Field names and shapes follow llama-server, so its
// clients (LangChain's Llamafile, llama.cpp's web UI scripts) work unchanged.
//
// /completion: prompt (string, token ids, or a mix like [12, "text", 34]), n_predict
// (max_tokens), stop, ignore_eos, n_probs, stream, the sampling fields, logit_bias (both
// forms), grammar (GBNF text) or json_schema (sample/grammar.hpp, sample/json_schema.hpp:
// a grammar that does not parse or a schema lmtk cannot enforce is a 400). Streams are SSE
// `data: {...}` events, the last with "stop": true and the summary; like llama-server there
// is no `[DONE]` on native endpoints.
#include <lmtk/serve/service.hpp>

#include <nlohmann/json.hpp>

#include <memory>
#include <string>
#include <vector>

namespace lmtk::serve::llamacpp {

inline json error_body(const std::string& message, int status) {
    const char* type = status == 401 ? "authentication_error"
                     : status == 404 ? "not_found_error"
                     : status == 503 ? "unavailable_error"
                     : status >= 500 ? "server_error" : "invalid_request_error";
    return {{"error", {{"code", status}, {"message", message}, {"type", type}}}};
}

inline std::string stop_type(finish_reason f) {
    switch (f) {
        case finish_reason::end_of_text: return "eos";
        case finish_reason::stop_string: return "word";
        case finish_reason::max_tokens:
        case finish_reason::context_full: return "limit";
        default: return "none";
    }
}

// A piece as llama.cpp writes it: the text when it is valid UTF-8, else its bytes.
inline json piece_json(const std::string& s) {
    try {
        (void)json(s).dump();  // throws on invalid UTF-8
        return s;
    } catch (const json::type_error&) {
    }
    json b = json::array();
    for (const char c : s) b.push_back(static_cast<unsigned char>(c));
    return b;
}

inline json probs_json(const tokenizer_t& tok, std::span<const token_logprobs> lps) {
    json out = json::array();
    for (const auto& lp : lps) {
        json top = json::array();
        for (const auto& [id, l] : lp.top) top.push_back({{"id", id}, {"token", tok.piece(id)}, {"logprob", l}});
        out.push_back({{"id", lp.id}, {"token", tok.piece(lp.id)}, {"logprob", lp.logprob}, {"top_logprobs", top}});
    }
    return out;
}

template <class Service>
json timings_json(const result& r) {
    auto per = [](std::size_t n, double ms) { return ms > 0 ? 1e3 * double(n) / ms : 0.0; };
    const std::size_t np = r.n_prompt - r.n_cached;
    return {{"prompt_n", np}, {"prompt_ms", r.prompt_ms}, {"prompt_per_token_ms", np ? r.prompt_ms / double(np) : 0.0},
            {"prompt_per_second", per(np, r.prompt_ms)}, {"predicted_n", r.tokens.size()}, {"predicted_ms", r.eval_ms},
            {"predicted_per_token_ms", r.tokens.empty() ? 0.0 : r.eval_ms / double(r.tokens.size())},
            {"predicted_per_second", per(r.tokens.size(), r.eval_ms)}};
}

struct parsed {
    request rq;
    bool stream = false;
    std::string model;
};

template <class Service>
std::vector<std::int32_t> read_prompt(Service& svc, const json& prompt) {
    // A string, or a mix of ids and strings; BOS only when it starts with a string (llama.cpp).
    if (prompt.is_string()) return svc.tokenize(prompt.get<std::string>());
    if (!prompt.is_array() || prompt.empty()) bad_request("prompt", "'prompt' must be a string or an array of token ids and strings, got " + show(prompt));
    std::vector<std::int32_t> out;
    bool first = true;
    for (const json& part : prompt) {
        if (part.is_number_integer()) {
            out.push_back(static_cast<std::int32_t>(std::clamp<std::int64_t>(part.get<std::int64_t>(), -1, 1 << 30)));
        } else if (part.is_string()) {
            const auto ids = svc.tokenize(part.get<std::string>(), first);
            out.insert(out.end(), ids.begin(), ids.end());
        } else {
            bad_request("prompt", "'prompt' must be a string or an array of token ids and strings, got " + show(prompt));
        }
        first = false;
    }
    return out;
}

template <class Service>
parsed read_completion(Service& svc, const json& body, std::string_view raw = {}) {
    const fields f(body);
    parsed p;
    p.rq = svc.new_request();
    read_sampling(f, p.rq.sampling);
    p.rq.sampling.logit_bias = read_logit_bias(f, "logit_bias", svc.n_vocab());
    if (auto v = f.bounded("n_predict", -2, 1 << 30)) p.rq.max_tokens = *v < 0 ? -1 : *v;
    else if (auto m = f.bounded("max_tokens", -2, 1 << 30)) p.rq.max_tokens = *m < 0 ? -1 : *m;
    p.rq.stop = read_stop(f);
    if (auto v = f.boolean("ignore_eos")) p.rq.ignore_eos = *v;
    if (auto v = f.bounded("n_probs", 0, 100); v && *v > 0) p.rq.top_logprobs = *v;
    read_grammar_fields(svc.eng(), f, p.rq.grammar, ordered_fields(raw, body));
    p.stream = f.boolean("stream").value_or(false);
    p.model = f.string("model").value_or(svc.model_id());
    const json* prompt = f.find("prompt");
    if (!prompt) bad_request("prompt", "'prompt' is required");
    p.rq.prompt = read_prompt(svc, *prompt);
    return p;
}

template <class Service>
json final_json(Service& svc, const parsed& p, const result& r, const std::string& content) {
    json j{{"index", 0}, {"content", content}, {"id_slot", r.slot}, {"stop", true}, {"model", p.model},
           {"tokens_predicted", r.tokens.size()}, {"tokens_evaluated", r.n_prompt}, {"tokens_cached", r.n_cached},
           {"truncated", false}, {"stop_type", stop_type(r.finish)}, {"stopping_word", ""},
           {"has_new_line", content.find('\n') != std::string::npos}, {"timings", timings_json<Service>(r)},
           {"generation_settings", {{"n_ctx", svc.eng().n_ctx()}, {"n_predict", p.rq.max_tokens},
                                    {"temperature", p.rq.sampling.temperature}, {"top_k", p.rq.sampling.top_k},
                                    {"top_p", p.rq.sampling.top_p}, {"min_p", p.rq.sampling.min_p}}}};
    if (p.rq.top_logprobs > 0) j["completion_probabilities"] = probs_json(svc.tokenizer(), r.logprobs);
    return j;
}

template <class Service>
class sse_native final : public stream_handler {
public:
    sse_native(Service& svc, parsed p) : svc_(svc), p_(std::move(p)) {}
    bool text(std::size_t, std::string_view text, std::span<const token_logprobs> lp, const write_fn& w) override {
        if (text.empty() && lp.empty()) return true;
        json j{{"index", 0}, {"content", std::string(text)}, {"stop", false}, {"id_slot", 0}};
        if (p_.rq.top_logprobs > 0) j["completion_probabilities"] = probs_json(svc_.tokenizer(), lp);
        return w("data: " + dump(j) + "\n\n");
    }
    bool end(std::size_t, const result& r, const write_fn& w) override {
        return w("data: " + dump(final_json(svc_, p_, r, "")) + "\n\n");
    }
    void error(const std::string& message, int status, const write_fn& w) override {
        w("data: " + dump(error_body(message, status)) + "\n\n");
    }

private:
    Service& svc_;
    parsed p_;
};

template <class Service>
void add_routes(http::router& routes, Service& svc) {
    auto on_error = [](http::response& res, int status, const std::string& msg, const std::string&, const std::string&) {
        res.status = status;
        res.set_content(dump(error_body(msg, status)), "application/json");
    };

    routes.get("/health", [&svc](const http::request&, http::response& res) {
        res.set_content(dump({{"status", "ok"}, {"slots_idle", svc.eng().n_slots() - svc.eng().n_busy()},
                              {"slots_processing", svc.eng().n_busy()}}),
                        "application/json");
    });

    routes.get("/props", [&svc](const http::request&, http::response& res) {
        const auto& s = svc.options().defaults;
        res.set_content(
            dump({{"default_generation_settings",
                   {{"n_ctx", svc.eng().n_ctx()},
                    {"params", {{"temperature", s.temperature}, {"top_k", s.top_k}, {"top_p", s.top_p}, {"min_p", s.min_p},
                                {"repeat_penalty", s.repeat_penalty}, {"repeat_last_n", s.repeat_last_n},
                                {"n_predict", svc.options().default_max_tokens}}}}},
                  {"total_slots", svc.eng().n_slots()},
                  {"model_path", svc.eng().model().path()},
                  {"model_alias", svc.model_id()},
                  {"chat_template", svc.chat_template()},
                  {"chat_format", to_string(svc.format())},
                  {"chat_template_kind", svc.template_kind()},
                  {"chat_format_description", describe(svc.format())},
                  {"batching", {{"forward_passes", svc.eng().batch_stats().first},
                                {"rows", svc.eng().batch_stats().second}}},
                  {"build_info", "lmtk 0.1.0"}}),
            "application/json");
    });

    routes.post("/tokenize", guarded(on_error, [&svc](const http::request& req, http::response& res) {
        const json body = parse_body(req.body);
        const fields f(body);
        auto content = f.string("content");
        if (!content) bad_request("content", "'content' is required");
        const bool add_special = f.boolean("add_special").value_or(false);
        const bool pieces = f.boolean("with_pieces").value_or(false);
        const auto ids = svc.tokenize(*content, add_special);
        json toks = json::array();
        for (const std::int32_t id : ids) {
            if (pieces) toks.push_back({{"id", id}, {"piece", piece_json(svc.tokenizer().piece(id))}});
            else toks.push_back(id);
        }
        res.set_content(dump({{"tokens", toks}}), "application/json");
    }));

    routes.post("/detokenize", guarded(on_error, [&svc](const http::request& req, http::response& res) {
        const json body = parse_body(req.body);
        const fields f(body);
        const json* t = f.array("tokens");
        std::vector<std::int32_t> ids;
        if (t)
            for (const json& v : *t) {
                if (!v.is_number_integer()) bad_request("tokens", "'tokens' must be an array of token ids, got " + show(*t));
                const auto id = v.get<std::int64_t>();
                if (id < 0 || static_cast<std::size_t>(id) >= svc.n_vocab())
                    bad_request("tokens", "token id " + std::to_string(id) + " is outside the vocabulary of " +
                                              std::to_string(svc.n_vocab()));
                ids.push_back(static_cast<std::int32_t>(id));
            }
        res.set_content(dump({{"content", svc.tokenizer().decode(ids)}}), "application/json");
    }));

    routes.post("/apply-template", guarded(on_error, [&svc](const http::request& req, http::response& res) {
        const json body = parse_body(req.body);
        const fields f(body);
        const nlohmann::ordered_json ordered = ordered_fields(req.body, body);
        res.set_content(dump({{"prompt", svc.chat_prompt(read_messages(f, "messages", ordered_at(ordered, {"messages"})),
                                                         read_tool_request(f, ordered))}}),
                        "application/json");
    }));

    routes.post("/completion", guarded(on_error, [&svc](const http::request& req, http::response& res) {
        parsed p = read_completion(svc, parse_body(req.body), req.body);
        if (p.stream) {
            const request rq = p.rq;
            svc.stream(res, "text/event-stream", rq, 1, std::make_shared<sse_native<Service>>(svc, std::move(p)));
            return;
        }
        const auto rs = svc.run(p.rq, 1);
        res.set_content(dump(final_json(svc, p, rs.front(), rs.front().text)), "application/json");
    }));
}

}  // namespace lmtk::serve::llamacpp
