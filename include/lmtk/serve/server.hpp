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
// Needs Boost (Beast/Asio, header-only) and nlohmann/json (CMake target lmtk::serve); not part
// of <lmtk/lmtk.hpp>. The transport (transport.hpp) reads requests on one I/O thread and runs
// handlers on a pool sized so that every running and queued request has a thread (slots +
// queue) plus a few for cheap requests; a request beyond the queue gets 503 at once. Every
// request is logged as one line on stderr.
#include <lmtk/serve/http.hpp>
#include <lmtk/serve/llamacpp.hpp>
#include <lmtk/serve/lmtp.hpp>
#include <lmtk/serve/ollama.hpp>
#include <lmtk/serve/openai.hpp>
#include <lmtk/serve/service.hpp>
#include <lmtk/serve/transport.hpp>

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
        transport_options to = o.transport;
        to.worker_threads = o.http_threads ? o.http_threads : e.n_slots() + e.options().max_queue + 4;
        routes_.before = [this](const http::request& req, http::response& res) {
            service_type::note_.clear();
            return authorize(req, res);
        };
        routes_.get("/", [this](const http::request&, http::response& res) { ollama::root(res); });
        openai::add_routes(routes_, svc_);
        ollama::add_routes(routes_, svc_);
        llamacpp::add_routes(routes_, svc_);
        auto on_upgrade = [this](const http::request& req, boost::asio::ip::tcp::socket socket) {
            // LMQL sends no credentials; with an API key the upgrade needs it like any request.
            const std::string& key = svc_.options().api_key;
            if (req.path != "/" || (!key.empty() && req.header("Authorization") != "Bearer " + key)) {
                const int status = req.path != "/" ? 404 : 401;
                const std::string body = dump(openai::error_body(
                    status == 404 ? "LMTP is served on GET /" : "invalid or missing API key (send 'Authorization: Bearer <key>')",
                    status));
                boost::system::error_code ec;
                boost::asio::write(socket, boost::asio::buffer(closing_response(status, body)), ec);
                socket.shutdown(boost::asio::ip::tcp::socket::shutdown_both, ec);
                return;
            }
            lmtp::serve_upgrade(svc_, req, std::move(socket), transport_->stopping_flag());
        };
        auto log = [log_requests = o.log_requests](const http::request& req, int status, double ms) {
            if (!log_requests) return;
            const std::string& note = service_type::note_;
            std::fprintf(stderr, "lmtk: %s %s %d %.1f ms%s%s\n", req.method.c_str(), req.path.c_str(), status, ms,
                         note.empty() ? "" : " ", note.c_str());
        };
        auto error_body = [](int status, const std::string& message) { return dump(openai::error_body(message, status)); };
        transport_ = std::make_unique<transport>(to, routes_, on_upgrade, log, error_body);
    }

    service_type& svc() noexcept { return svc_; }
    http::router& routes() noexcept { return routes_; }

    // Binds the listening socket; returns the port (useful with port 0). Throws when it fails.
    int bind() {
        const auto& o = svc_.options();
        port_ = transport_->bind(o.host, o.port);
        return port_;
    }
    int port() const noexcept { return port_; }

    // Serves until stop(). A peer that vanishes mid-write must not kill the process.
    bool listen() {
        std::signal(SIGPIPE, SIG_IGN);
        if (port_ < 0) bind();
        transport_->run();
        return true;
    }
    void stop() { transport_->stop(); }  // LMTP sessions notice within 200 ms

private:
    // With an API key, everything but liveness and discovery needs "Authorization: Bearer KEY".
    bool authorize(const http::request& req, http::response& res) const {
        const std::string& key = svc_.options().api_key;
        if (key.empty()) return true;
        static const char* open[] = {"/health", "/v1/models", "/models", "/", "/api/version"};
        for (const char* p : open)
            if (req.path == p) return true;
        const std::string auth = req.header("Authorization");
        if (auth == "Bearer " + key) return true;
        res.status = 401;
        res.set_content(dump(openai::error_body("invalid or missing API key (send 'Authorization: Bearer <key>')", 401)),
                        "application/json");
        return false;
    }

    service_type svc_;
    http::router routes_;
    std::unique_ptr<transport> transport_;
    int port_ = -1;
};

}  // namespace lmtk::serve
