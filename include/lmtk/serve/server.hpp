#pragma once
// lmtk::serve::server: one model behind the OpenAI, Ollama and llama.cpp HTTP APIs, and LMQL's
// LMTP as a WebSocket upgrade of GET / on the same port.
//
//   model::llama<Set, Target> m(path);
//   auto tok = tokenize::load_tokenizer(m.source());
//   serve::engine<decltype(m)> e(m, tok, {.n_slots = 4, .max_queue = 32, .context = {...}});
//   serve::server<decltype(m)> s(e, {.host = "127.0.0.1", .port = 8080});
//   s.bind();           // throws when the port is taken
//   s.listen();         // blocks until stop()
//
// Needs cpp-httplib and nlohmann/json (CMake target lmtk::serve); not part of <lmtk/lmtk.hpp>.
// Requests are handled on an httplib thread pool sized so that every running and queued
// request has a thread (slots + queue) plus a few for cheap requests; a request beyond the
// queue gets 503 at once. Every request is logged as one line on stderr.
#include <lmtk/serve/llamacpp.hpp>
#include <lmtk/serve/lmtp.hpp>
#include <lmtk/serve/ollama.hpp>
#include <lmtk/serve/openai.hpp>
#include <lmtk/serve/service.hpp>

#include <httplib.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <memory>
#include <string>

namespace lmtk::serve {

template <class Model, class KV = model::kv_f32>
class server {
public:
    using engine_type = engine<Model, KV>;
    using service_type = service<Model, KV>;

    server(engine_type& e, server_options opt) : svc_(e, std::move(opt)) {
        const auto& o = svc_.options();
        const std::size_t threads = o.http_threads ? o.http_threads : e.n_slots() + e.options().max_queue + 4;
        http_.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
        // Idle keep-alive connections hold a pool thread; let them go soon.
        http_.set_keep_alive_timeout(2);
        http_.set_read_timeout(30);
        http_.set_write_timeout(30);
        http_.set_payload_max_length(64u << 20);  // LMTP-sized logit_bias masks fit; nothing larger
        http_.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
            started() = std::chrono::steady_clock::now();
            service_type::note_.clear();
            return authorize(req, res) ? httplib::Server::HandlerResponse::Unhandled
                                       : httplib::Server::HandlerResponse::Handled;
        });
        http_.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
            if (res.status == 404 && res.body.empty())
                res.set_content(dump(openai::error_body("no route for " + req.method + " " + req.path, 404)), "application/json");
        });
        http_.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
            std::string what = "internal error";
            try {
                if (ep) std::rethrow_exception(ep);
            } catch (const std::exception& e) {
                what = e.what();
            } catch (...) {
            }
            res.status = 500;
            res.set_content(dump(openai::error_body(what, 500)), "application/json");
        });
        if (o.log_requests)
            http_.set_logger([](const httplib::Request& req, const httplib::Response& res) {
                const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started()).count();
                const std::string& note = service_type::note_;
                std::fprintf(stderr, "lmtk: %s %s %d %.1f ms%s%s\n", req.method.c_str(), req.path.c_str(), res.status, ms,
                             note.empty() ? "" : " ", note.c_str());
            });
        http_.Get("/", [this](const httplib::Request& req, httplib::Response& res) {
            if (!lmtp::is_upgrade(req)) return ollama::root(res);
            // LMQL sends no credentials; with an API key the upgrade needs it like any request.
            const std::string& key = svc_.options().api_key;
            if (!key.empty() && req.get_header_value("Authorization") != "Bearer " + key) {
                res.status = 401;
                res.set_content("invalid or missing API key (send 'Authorization: Bearer <key>')", "text/plain");
                return;
            }
            lmtp::serve_upgrade(svc_, req, res, stopping_);
        });
        openai::add_routes(http_, svc_);
        ollama::add_routes(http_, svc_);
        llamacpp::add_routes(http_, svc_);
    }

    service_type& svc() noexcept { return svc_; }
    httplib::Server& http() noexcept { return http_; }

    // Binds the listening socket; returns the port (useful with port 0). Throws when it fails.
    int bind() {
        const auto& o = svc_.options();
        port_ = o.port == 0 ? http_.bind_to_any_port(o.host) : (http_.bind_to_port(o.host, o.port) ? o.port : -1);
        if (port_ < 0) fail("cannot listen on ", o.host, ":", o.port, " (address in use or not available)");
        return port_;
    }
    int port() const noexcept { return port_; }

    // Serves until stop(). A peer that vanishes mid-write must not kill the process.
    bool listen() {
        std::signal(SIGPIPE, SIG_IGN);
        if (port_ < 0) bind();
        return http_.listen_after_bind();
    }
    void stop() {
        stopping_ = true;  // LMTP sessions notice within 200 ms
        http_.stop();
    }

private:
    static std::chrono::steady_clock::time_point& started() {
        thread_local std::chrono::steady_clock::time_point t;
        return t;
    }

    // With an API key, everything but liveness and discovery needs "Authorization: Bearer KEY".
    bool authorize(const httplib::Request& req, httplib::Response& res) const {
        const std::string& key = svc_.options().api_key;
        if (key.empty()) return true;
        static const char* open[] = {"/health", "/v1/models", "/models", "/", "/api/version"};
        for (const char* p : open)
            if (req.path == p) return true;
        const std::string auth = req.get_header_value("Authorization");
        if (auth == "Bearer " + key) return true;
        res.status = 401;
        // The body of a refused request is never read: the connection cannot carry another one.
        res.set_header("Connection", "close");
        res.set_content(dump(openai::error_body("invalid or missing API key (send 'Authorization: Bearer <key>')", 401)),
                        "application/json");
        return false;
    }

    service_type svc_;
    std::atomic<bool> stopping_{false};
    httplib::Server http_;
    int port_ = -1;
};

}  // namespace lmtk::serve
