#pragma once
// What the HTTP front ends (openai.hpp, ollama.hpp, llamacpp.hpp) share: the engine, the model's
// identity and chat format, tokenization, and the two ways a request runs - to completion in
// the handler, or streamed through the transport's body sink, which stops generating as soon as
// the client is gone.
#include <lmtk/serve/chat_template.hpp>
#include <lmtk/tokenize/jinja/template.hpp>
#include <lmtk/serve/engine.hpp>
#include <lmtk/serve/params.hpp>
#include <lmtk/serve/tool_calls.hpp>

#include <lmtk/serve/http.hpp>
#include <lmtk/serve/transport.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

namespace lmtk::serve {

struct server_options {
    std::string host = "127.0.0.1";
    int port = 8080;
    std::string alias;            // model id reported to clients; default: the file's stem
    std::string chat_template;    // Jinja source overriding the model's (--chat-template-file)
    std::string api_key;          // empty: no authentication
    std::size_t http_threads = 0; // 0: slots + queue + a few for cheap requests
    transport_options transport;  // body/header sizes, deadlines, connections (worker_threads: http_threads)
    sampling_params defaults;     // what a request that sets nothing gets
    int default_max_tokens = -1;  // < 0: until the context is full
    double load_ms = 0.0;         // reported as Ollama's load_duration
    bool log_requests = true;
};

// Compact JSON that never throws on invalid UTF-8 (a token can be half a character).
inline std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

inline std::string random_id(std::string_view prefix) {
    thread_local std::mt19937_64 g{std::random_device{}()};
    static constexpr char hex[] = "0123456789abcdef";
    std::string s(prefix);
    std::uint64_t a = g(), b = g();
    for (int i = 0; i < 16; ++i) s += hex[(a >> (4 * i)) & 15];
    for (int i = 0; i < 8; ++i) s += hex[(b >> (4 * i)) & 15];
    return s;
}

inline std::int64_t unix_seconds() {
    return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// RFC 3339 UTC with nanoseconds, as Ollama writes timestamps.
inline std::string rfc3339(std::chrono::system_clock::time_point t = std::chrono::system_clock::now()) {
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
    const std::time_t secs = static_cast<std::time_t>(ns / 1000000000);
    std::tm tm{};
    gmtime_r(&secs, &tm);
    char buf[64];
    std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%09lldZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                  tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<long long>(ns % 1000000000));
    return buf;
}

// What an API does with a streamed request. Each callback writes through `write` (false: the
// client is gone). One stream may carry several choices (OpenAI n > 1), run one after another.
struct stream_handler {
    using write_fn = std::function<bool(std::string_view)>;
    virtual ~stream_handler() = default;
    virtual bool begin(std::size_t /*choice*/, const write_fn&) { return true; }
    virtual bool text(std::size_t choice, std::string_view text, std::span<const token_logprobs> lp, const write_fn&) = 0;
    virtual bool end(std::size_t choice, const result& r, const write_fn&) = 0;
    virtual void done(const std::vector<result>&, const write_fn&) {}
    virtual void error(const std::string& message, int status, const write_fn&) = 0;
};

template <class Model, class KV>
class service {
public:
    using engine_type = engine<Model, KV>;

    service(engine_type& e, server_options opt) : eng_(e), opt_(std::move(opt)) {
        const auto& src = e.model().source();
        if (!opt_.chat_template.empty()) chat_template_ = opt_.chat_template;  // --chat-template-file
        else if (const gguf::file* f = src.gguf_file()) chat_template_ = f->get_or<std::string>("tokenizer.chat_template", "");
        format_ = detect_chat_format(chat_template_);  // stop strings; the fallback formatter
        // The model's own template, run by lmtk's Jinja interpreter; one that does not parse
        // falls back to the built-in family format, said on stderr and in /props, /api/show.
        if (!chat_template_.empty()) {
            try {
                jinja_.emplace(chat_template_);
            } catch (const error& e) {
                template_note_ = std::string("the model's chat template does not parse (") + e.what() + "); using the built-in " +
                                 std::string(to_string(format_)) + " format";
                std::fprintf(stderr, "lmtk serve-model: %s\n", template_note_.c_str());
            }
        }
        // Tool calls in the syntax the template teaches; lmtk's generic format when it teaches
        // none (or lmtk runs no template of the model's).
        tool_syntax_ = jinja_ ? detect_tool_syntax(chat_template_) : tool_syntax::generic;
        model_id_ = opt_.alias.empty() ? std::filesystem::path(src.path()).stem().string() : opt_.alias;
        created_ = unix_seconds();
        std::error_code ec;
        file_size_ = std::filesystem::file_size(src.path(), ec);
        if (ec) file_size_ = 0;
    }

    engine_type& eng() noexcept { return eng_; }
    const server_options& options() const noexcept { return opt_; }
    const std::string& model_id() const noexcept { return model_id_; }
    std::int64_t created() const noexcept { return created_; }
    chat_format format() const noexcept { return format_; }
    const std::string& chat_template() const noexcept { return chat_template_; }
    std::uintmax_t file_size() const noexcept { return file_size_; }
    const tokenizer_t& tokenizer() const noexcept { return eng_.tokenizer(); }
    std::size_t n_vocab() const noexcept { return tokenizer().size(); }

    // Prompts are tokenized with special-token parsing on, as llama.cpp does: templates spell
    // control tokens as text.
    std::vector<std::int32_t> tokenize(std::string_view text, bool add_bos = true) const {
        return tokenizer().encode(text, add_bos && tokenizer().vocabulary().add_bos(), /*parse_special=*/true);
    }

    // The prompt for a conversation: the model's Jinja template when it has one that parses
    // (rendered as transformers' apply_chat_template does), else the built-in family format.
    // A template that raises (raise_exception, an unsupported construct at run time) is a 400.
    // `tools`: the request's tool definitions (a JSON array, or null), for templates that list them.
    std::string chat_prompt(const std::vector<chat_message>& msgs, const nlohmann::ordered_json& tools = nlohmann::ordered_json()) const {
        if (!jinja_) return format_chat(format_, msgs, true);
        const tokenize::vocab& v = tokenizer().vocabulary();
        nlohmann::ordered_json ctx;
        nlohmann::ordered_json list = nlohmann::ordered_json::array();
        for (const chat_message& m : msgs) {
            nlohmann::ordered_json one = {{"role", m.role}, {"content", m.content}};
            if (m.extra.is_object())
                for (auto it = m.extra.begin(); it != m.extra.end(); ++it) one[it.key()] = it.value();
            list.push_back(std::move(one));
        }
        ctx["messages"] = std::move(list);
        if (tools.is_array() && !tools.empty()) ctx["tools"] = tools;
        ctx["add_generation_prompt"] = true;
        ctx["bos_token"] = v.bos() != tokenize::no_token ? v.text(v.bos()) : std::string();
        ctx["eos_token"] = v.eos() != tokenize::no_token ? v.text(v.eos()) : std::string();
        std::string text;
        try {
            text = jinja_->render(ctx);
        } catch (const error& e) {
            bad_request("messages", e.what());
        }
        // Templates write BOS themselves; the tokenizer adds it too when the vocabulary says so.
        // One is enough (llama.cpp strips it the same way).
        const std::string bos = ctx["bos_token"].get<std::string>();
        if (v.add_bos() && !bos.empty() && text.compare(0, bos.size(), bos) == 0) text.erase(0, bos.size());
        return text;
    }
    // The prompt for a conversation with tools (tool_calls.hpp): the model's template shows
    // them when it knows a tool syntax; otherwise the generic format's system text does.
    std::string chat_prompt(std::vector<chat_message> msgs, const tool_request& tr) const {
        if (tool_syntax_ == tool_syntax::generic) {
            if (tr.active()) add_generic_tool_prompt(msgs, tr);
            return chat_prompt(msgs);
        }
        return chat_prompt(msgs, tr.tools.empty() ? nlohmann::ordered_json() : tr.sent);
    }
    tool_syntax tools_syntax() const noexcept { return tool_syntax_; }

    // Constrains `rq` to the calls `tr` allows (nothing when it allows none); a tool whose
    // parameters cannot be enforced, or a second constraint, is a 400.
    void constrain_to_tools(request& rq, const tool_request& tr) const {
        if (!tr.active()) return;
        if (rq.grammar) bad_request("tools", "'tools' cannot be combined with another output constraint (grammar, json_schema, response_format, format)");
        std::string text;
        try {
            text = tool_call_gbnf(tool_syntax_, tr);
        } catch (const error& e) {
            bad_request("tools", std::string("'tools': ") + e.what());
        }
        rq.grammar = read_grammar(eng_, "tools", text);
        if (tool_grammar_is_lazy(tool_syntax_, tr)) rq.grammar_trigger = std::string(tool_trigger(tool_syntax_));
    }
    tool_output read_tool_output(const std::string& text, const tool_request& tr) const {
        if (!tr.active()) return tool_output{text, {}};
        tool_output out = parse_tool_output(tool_syntax_, text, tr.tools);
        for (tool_call& c : out.calls) c.id = new_tool_call_id();
        return out;
    }

    // Which formatter chat_prompt uses, for /props and /api/show.
    std::string template_kind() const {
        if (!jinja_) return std::string(to_string(format_));
        return opt_.chat_template.empty() ? std::string("jinja (the model's own template)") : std::string("jinja (--chat-template-file)");
    }
    const std::string& template_note() const noexcept { return template_note_; }
    // Whether chat turns have a format (the model's template, or a recognised family).
    bool has_chat_template() const noexcept { return jinja_.has_value() || format_ != chat_format::plain; }

    // A request with the server's defaults, to be overridden by the API's fields.
    request new_request() const {
        request r;
        r.sampling = opt_.defaults;
        r.max_tokens = opt_.default_max_tokens;
        return r;
    }

    // Refuses prompts that cannot run before any response is started (clean 400s).
    void check_prompt(const request& r) const {
        if (const std::string why = context_fit_error(r.prompt.size(), 1, eng_.n_ctx()); !why.empty())
            throw http_error(400, why + (r.prompt.empty() ? "" : "; shorten it or start the server with a larger -c"), "prompt",
                             r.prompt.empty() ? "" : "context_length_exceeded");
        for (const std::int32_t t : r.prompt)
            if (t < 0 || static_cast<std::size_t>(t) >= n_vocab())
                throw http_error(400, "token id " + std::to_string(t) + " is outside the vocabulary of " +
                                          std::to_string(n_vocab()), "prompt");
    }

    // Runs `n` completions of one request in the caller's thread (non-streaming responses).
    std::vector<result> run(const request& rq, std::size_t n = 1) {
        check_prompt(rq);
        auto ticket = eng_.enter();
        auto lease = ticket.wait(rq.prompt, nullptr);
        std::vector<result> out;
        for (std::size_t i = 0; i < n; ++i) {
            request r = rq;
            if (r.sampling.seed && i > 0) *r.sampling.seed += i;  // n choices from one seed differ
            out.push_back(eng_.run(**lease, r, [](std::string_view, std::span<const token_logprobs>) { return true; }));
        }
        note_ = summary(out);
        for (const result& r : out)
            if (r.grammar_dead_end) throw http_error(400, dead_end_message(r), "grammar");
        return out;
    }

    // Starts a streamed response. Admission happens now, so a full queue is still a 503; the
    // slot wait and generation happen in the body writer, which notices a client that left
    // (a write fails or the socket is closed) and frees the slot.
    void stream(http::response& res, const char* content_type, const request& rq, std::size_t n,
                std::shared_ptr<stream_handler> h) {
        check_prompt(rq);
        auto state = std::make_shared<stream_state>(eng_.enter());
        res.status = 200;
        res.set_header("Cache-Control", "no-cache");
        res.set_stream(content_type, [this, state, rq, n, h](http::body_sink& sink) {
            const stream_handler::write_fn write = [&sink](std::string_view s) { return sink.write(s); };
            std::vector<result> results;
            bool gone = false;
            try {
                auto lease = state->ticket.wait(rq.prompt, [&sink] { return sink.alive(); });
                if (!lease) {
                    note_ = "client left while queued";
                    return;
                }
                for (std::size_t i = 0; i < n && !gone; ++i) {
                    request r = rq;
                    if (r.sampling.seed && i > 0) *r.sampling.seed += i;
                    if (!h->begin(i, write)) {
                        gone = true;
                        break;
                    }
                    result res = eng_.run(**lease, r, [&](std::string_view text, std::span<const token_logprobs> lp) {
                        if (text.empty() && lp.empty()) return sink.alive();
                        return h->text(i, text, lp, write);
                    });
                    if (res.grammar_dead_end) {  // the status line is sent: the API's error event says it
                        note_ = summary({res}) + " grammar dead end";
                        h->error(dead_end_message(res), 400, write);
                        return;
                    }
                    gone = res.cancelled || !h->end(i, res, write);
                    results.push_back(std::move(res));
                }
                note_ = summary(results) + (gone ? " cancelled: client left" : "");
                if (gone) return;
                h->done(results, write);
            } catch (const std::exception& e) {
                note_ = std::string("error: ") + e.what();
                h->error(e.what(), 500, write);
            }
        });
    }

    // One line per request: the logger adds method, path, status and time; handlers add this.
    static thread_local std::string note_;

private:
    struct stream_state {
        explicit stream_state(typename engine_type::ticket t) : ticket(std::move(t)) {}
        typename engine_type::ticket ticket;
    };

    static std::string dead_end_message(const result& r) {
        std::string so_far = r.text.size() > 80 ? r.text.substr(0, 77) + "..." : r.text;
        return "the output cannot follow the grammar to its end with this model's vocabulary: after " +
               std::to_string(r.tokens.size()) + " tokens (\"" + so_far +
               "\") no token continues it (or finishes it within max_tokens); a grammar the model can spell, or a larger "
               "max_tokens, is needed";
    }

    static std::string summary(const std::vector<result>& rs) {
        if (rs.empty()) return {};
        std::size_t gen = 0;
        for (const auto& r : rs) gen += r.tokens.size();
        char buf[160];
        std::snprintf(buf, sizeof buf, "slot %zu, prompt %zu (%zu cached), generated %zu, %.*s", rs.front().slot,
                      rs.front().n_prompt, rs.front().n_cached, gen, int(to_string(rs.back().finish).size()),
                      to_string(rs.back().finish).data());
        return buf;
    }

    engine_type& eng_;
    server_options opt_;
    std::string chat_template_;
    chat_format format_ = chat_format::plain;
    tool_syntax tool_syntax_ = tool_syntax::generic;
    std::optional<jinja::template_program> jinja_;
    std::string template_note_;
    std::string model_id_;
    std::int64_t created_ = 0;
    std::uintmax_t file_size_ = 0;
};

template <class Model, class KV>
thread_local std::string service<Model, KV>::note_;

// Wraps a handler so that nothing a request does escapes as an exception: request errors
// become the API's error body with their status, a full queue a 503, anything else a 500.
// on_error(res, status, message, param, code) writes the API family's error shape.
template <class OnError, class Handler>
http::handler guarded(OnError on_error, Handler h) {
    return [on_error, h](const http::request& req, http::response& res) {
        try {
            h(req, res);
        } catch (const http_error& e) {
            on_error(res, e.status, e.what(), e.param, e.code);
        } catch (const queue_full& e) {
            on_error(res, 503, e.what(), std::string(), std::string("server_busy"));
        } catch (const json::exception& e) {
            on_error(res, 400, std::string("malformed request: ") + e.what(), std::string(), std::string());
        } catch (const std::bad_alloc&) {
            on_error(res, 500, "out of memory", std::string(), std::string());
        } catch (const std::exception& e) {
            on_error(res, 500, e.what(), std::string(), std::string());
        }
    };
}

// Messages' text content: a string, or OpenAI's array of parts of which only text is supported.
inline std::string message_text(const json& content, const std::string& where) {
    if (content.is_null()) return {};
    if (content.is_string()) return content.get<std::string>();
    if (content.is_array()) {
        std::string out;
        for (const json& part : content) {
            if (!part.is_object()) bad_request(where, "'" + where + "' parts must be objects, got " + show(part));
            const auto type = part.find("type");
            if (type == part.end() || !type->is_string() || *type != "text")
                throw http_error(400, "'" + where + "': only text parts are supported (this model takes no images)", where);
            const auto text = part.find("text");
            if (text == part.end() || !text->is_string())
                bad_request(where, "'" + where + "' text parts need a string 'text'");
            out += text->get<std::string>();
        }
        return out;
    }
    bad_request(where, "'" + where + "' must be a string or an array of text parts, got " + show(content));
}

// messages: [{role, content}] as OpenAI and Ollama send them (roles lower-cased).
// `ordered`: the same array with its objects' keys in the client's order (ordered_fields), so the
// template sees the messages as the client wrote them; null: the parsed body's (sorted) order.
inline std::vector<chat_message> read_messages(const fields& f, const char* key = "messages",
                                               const nlohmann::ordered_json* ordered = nullptr) {
    const json* v = f.array(key);
    if (!v) bad_request(key, std::string("'") + key + "' is required");
    std::vector<chat_message> out;
    for (std::size_t i = 0; i < v->size(); ++i) {
        const json& m = (*v)[i];
        const std::string where = std::string(key) + "[" + std::to_string(i) + "]";
        if (!m.is_object()) bad_request(where, "'" + where + "' must be an object, got " + show(m));
        const fields mf(m, where + ".");
        auto role = mf.string("role");
        if (!role) bad_request(where + ".role", "'" + where + ".role' is required");
        for (char& c : *role) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        const auto c = m.find("content");
        chat_message msg{*role, c == m.end() ? std::string() : message_text(*c, where + ".content"), nlohmann::ordered_json()};
        // Everything else goes to the template as sent, except that a tool call's arguments
        // written as a JSON string (OpenAI's form) become the object templates expect (the
        // form transformers documents and Ollama sends).
        const bool have_order = ordered && ordered->is_array() && ordered->size() == v->size() && (*ordered)[i].is_object();
        const nlohmann::ordered_json sorted = have_order ? nlohmann::ordered_json() : nlohmann::ordered_json::parse(m.dump());
        const nlohmann::ordered_json& om = have_order ? (*ordered)[i] : sorted;
        for (auto it = om.begin(); it != om.end(); ++it) {
            if (it.key() == "role" || it.key() == "content") continue;
            msg.extra[it.key()] = it.value();
        }
        if (c == m.end() || c->is_null()) msg.extra["content"] = nullptr;
        if (auto calls = msg.extra.find("tool_calls"); calls != msg.extra.end() && calls->is_array())
            for (auto& call : *calls) {
                if (!call.is_object()) continue;
                const auto fn = call.find("function");
                if (fn == call.end() || !fn->is_object()) continue;
                const auto args = fn->find("arguments");
                if (args == fn->end() || !args->is_string()) continue;
                if (auto parsed = tool_detail::parse_json(args->get_ref<const std::string&>()); parsed && parsed->is_object())
                    *args = std::move(*parsed);
            }
        out.push_back(std::move(msg));
    }
    if (out.empty()) bad_request(key, std::string("'") + key + "' must not be empty");
    return out;
}

// The request's members whose objects keep the client's key order (tools' and schemas'
// properties), read from the raw body; `raw` empty: taken from the parsed body (keys sorted).
inline nlohmann::ordered_json ordered_fields(std::string_view raw, const json& body) {
    if (raw.empty()) {
        nlohmann::ordered_json out = nlohmann::ordered_json::object();
        for (const char* k : {"tools", "response_format", "format", "json_schema", "messages"})
            if (auto it = body.find(k); it != body.end()) out[k] = nlohmann::ordered_json::parse(it->dump());
        return out;
    }
    try {
        return core::ordered_members(raw, {"tools", "response_format", "format", "json_schema", "messages"});
    } catch (const error& e) {
        bad_request("tools", std::string("the request's tools, schemas or messages hold ") + e.what());
    }
}

// tools and tool_choice as OpenAI sends them (Ollama sends tools only: tool_choice is auto).
inline tool_request read_tool_request(const fields& f, const nlohmann::ordered_json& ordered) {
    tool_request tr;
    if (const auto it = ordered.find("tools"); it != ordered.end() && !it->is_null()) {
        tr.tools = read_tool_defs(*it);
        tr.sent = *it;
    }
    tr.choice = read_tool_choice(f.find("tool_choice"), tr.tools);
    if (auto v = f.boolean("parallel_tool_calls")) tr.parallel = *v;
    return tr;
}

// OpenAI's message.tool_calls: arguments as a JSON string.
inline json openai_tool_calls(const std::vector<tool_call>& calls) {
    json out = json::array();
    for (const tool_call& c : calls)
        out.push_back({{"id", c.id}, {"type", "function"},
                       {"function", {{"name", c.name}, {"arguments", c.arguments.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace)}}}});
    return out;
}

}  // namespace lmtk::serve
