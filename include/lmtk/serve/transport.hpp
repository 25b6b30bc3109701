#pragma once
// The HTTP/1.1 transport of lmtk's server, on Boost.Beast and Asio (header-only parts of Boost).
//
// One I/O thread owns every socket: it accepts, reads and parses requests, and writes
// responses, all asynchronously, so an idle, slow or hostile connection costs a socket and a few
// KiB, never a thread. A complete request goes to a pool of worker threads that run the route
// handlers (a handler may block for a whole generation); a streamed body is written from the
// worker through the I/O thread, one chunk at a time, each write bounded by a deadline.
//
// Per connection, one request at a time: the next request is not read until the answer to the
// current one is written, so pipelined requests are answered in order (Beast's buffer keeps
// whatever the client sent ahead).
//
// Limits (transport_options, all refused with a status naming the limit, then the connection
// is closed): headers (431), body (413, checked against Content-Length before the body is read,
// and while a chunked body arrives), time to receive headers (also bounds an idle keep-alive
// connection: closed silently) and the body (408), connections (503), WebSocket sessions (503).
// Bytes that are not HTTP (a TLS ClientHello on the plain port, say) fail the parser at once:
// 400 and close.
//
// A WebSocket upgrade (GET with Upgrade: websocket) is handed over with its socket to
// `on_upgrade`, which runs on a thread of its own: long-lived sessions never occupy a worker.
#include <lmtk/core/error.hpp>
#include <lmtk/serve/http.hpp>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

namespace lmtk::serve {

// A whole answer that ends the connection: status line, JSON body, "Connection: close". For the
// refusals made before any handler runs (limits, bad HTTP, a refused WebSocket upgrade).
inline std::string closing_response(int status, std::string_view json_body) {
    namespace bhttp = boost::beast::http;
    return "HTTP/1.1 " + std::to_string(status) + " " +
           std::string(bhttp::obsolete_reason(bhttp::int_to_status(static_cast<unsigned>(status)))) +
           "\r\nServer: lmtk\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(json_body.size()) +
           "\r\nConnection: close\r\n\r\n" + std::string(json_body);
}

struct transport_options {
    std::size_t max_body_bytes = std::size_t(16) << 20;   // 16 MiB: a full-vocabulary logit_bias fits
    std::size_t max_header_bytes = std::size_t(64) << 10; // request line + headers
    std::chrono::milliseconds header_timeout{10'000};     // first byte to end of headers, idle wait included
    std::chrono::milliseconds keep_alive_timeout{5'000};  // the same between requests on one connection
    std::chrono::milliseconds body_timeout{60'000};       // end of headers to end of body
    std::chrono::milliseconds write_timeout{30'000};      // each write of a response or chunk
    std::size_t max_connections = 512;
    std::size_t max_upgrades = 64;                        // concurrent WebSocket sessions
    std::size_t worker_threads = 8;
};

class transport {
public:
    // Runs a WebSocket session on a thread of its own. The socket stays on the transport's I/O
    // context: its asynchronous operations run on the I/O thread like every connection's.
    using upgrade_fn = std::function<void(const http::request&, boost::asio::ip::tcp::socket)>;
    // Called once per answered request, on the thread that answered it.
    using log_fn = std::function<void(const http::request&, int status, double ms)>;
    // The JSON text of an error answer the transport makes itself (bad HTTP, limits).
    using error_body_fn = std::function<std::string(int status, const std::string& message)>;

    transport(transport_options opt, const http::router& routes, upgrade_fn on_upgrade, log_fn log, error_body_fn error_body)
        : opt_(opt), routes_(routes), on_upgrade_(std::move(on_upgrade)), log_(std::move(log)),
          error_body_(std::move(error_body)), acceptor_(ioc_), pool_(opt.worker_threads ? opt.worker_threads : 1) {}

    ~transport() {
        stop();
        pool_.join();
        wait_upgrades();
    }

    // Binds the listening socket; returns the port (the chosen one with port 0). Throws lmtk::error.
    int bind(const std::string& host, int port) {
        namespace net = boost::asio;
        using tcp = net::ip::tcp;
        boost::system::error_code ec;
        tcp::resolver resolver(ioc_);
        const auto results = resolver.resolve(host, std::to_string(port), tcp::resolver::passive, ec);
        if (ec || results.empty()) fail("cannot resolve host '", host, "': ", ec.message());
        const tcp::endpoint ep = results.begin()->endpoint();
        acceptor_.open(ep.protocol(), ec);
        if (!ec) acceptor_.set_option(net::socket_base::reuse_address(true), ec);
        if (!ec) acceptor_.bind(ep, ec);
        if (!ec) acceptor_.listen(net::socket_base::max_listen_connections, ec);
        if (ec) fail("cannot listen on ", host, ":", port, " (", ec.message(), ")");
        return acceptor_.local_endpoint().port();
    }

    // Serves on the calling thread until stop(); then waits for the handlers that are running.
    void run() {
        accept();
        ioc_.run();
        pool_.join();
    }

    void stop() {
        stopping_ = true;
        ioc_.stop();
    }
    bool stopping() const noexcept { return stopping_; }
    const std::atomic<bool>& stopping_flag() const noexcept { return stopping_; }
    const transport_options& options() const noexcept { return opt_; }

private:
    class connection;

    void accept();

    // Upgrade sessions run on detached threads, counted so that the destructor can wait for them.
    bool begin_upgrade() {
        std::lock_guard lock(upgrades_mutex_);
        if (upgrades_ >= opt_.max_upgrades) return false;
        ++upgrades_;
        return true;
    }
    void end_upgrade() {
        std::lock_guard lock(upgrades_mutex_);
        --upgrades_;
        upgrades_cv_.notify_all();
    }
    void wait_upgrades() {
        std::unique_lock lock(upgrades_mutex_);
        upgrades_cv_.wait(lock, [&] { return upgrades_ == 0; });
    }

    transport_options opt_;
    const http::router& routes_;
    upgrade_fn on_upgrade_;
    log_fn log_;
    error_body_fn error_body_;
    std::atomic<bool> stopping_{false};
    std::atomic<std::size_t> connections_{0};
    std::mutex upgrades_mutex_;
    std::condition_variable upgrades_cv_;
    std::size_t upgrades_ = 0;
    // Last, so that they go first: the I/O context's destructor destroys the connections its
    // pending handlers still hold, and those touch the members above.
    boost::asio::io_context ioc_{1};
    boost::asio::ip::tcp::acceptor acceptor_;
    boost::asio::steady_timer retry_{ioc_};
    boost::asio::thread_pool pool_;
};

class transport::connection : public std::enable_shared_from_this<transport::connection> {
public:
    connection(transport& t, boost::asio::ip::tcp::socket s) : t_(t), stream_(std::move(s)) {
        boost::system::error_code ec;
        const auto ep = stream_.socket().remote_endpoint(ec);
        if (!ec) remote_ = ep.address().to_string() + ":" + std::to_string(ep.port());
        ++t_.connections_;
    }
    ~connection() { --t_.connections_; }

    void start() {
        if (t_.connections_ > t_.opt_.max_connections) {
            refuse(503, "too many connections (the limit is " + std::to_string(t_.opt_.max_connections) + ")");
            return;
        }
        read_header(t_.opt_.header_timeout);
    }

private:
    using clock = std::chrono::steady_clock;
    using error_code = boost::system::error_code;
    using parser_type = boost::beast::http::request_parser<boost::beast::http::string_body>;

    // ---- reading (I/O thread) -----------------------------------------------------------------
    void read_header(std::chrono::milliseconds timeout) {
        parser_.emplace();
        parser_->header_limit(static_cast<std::uint32_t>(t_.opt_.max_header_bytes));
        parser_->body_limit(t_.opt_.max_body_bytes);
        stream_.expires_after(timeout);
        boost::beast::http::async_read_header(stream_, buffer_, *parser_,
                                              [self = shared_from_this()](error_code ec, std::size_t) { self->on_header(ec); });
    }

    void on_header(error_code ec) {
        namespace bhttp = boost::beast::http;
        if (ec) return on_read_error(ec, /*in_body=*/false);
        started_ = clock::now();
        // A declared body over the limit is refused before a byte of it is read.
        if (const auto n = parser_->content_length(); n && *n > t_.opt_.max_body_bytes)
            return refuse(413, "the request body of " + std::to_string(*n) + " bytes is over the limit of " +
                                   std::to_string(t_.opt_.max_body_bytes) + " bytes");
        if (parser_->is_done()) return on_request();
        // curl and others wait for this before sending a large body.
        if (http::iequals(std::string(parser_->get()[bhttp::field::expect]), "100-continue")) {
            auto cont = std::make_shared<std::string>("HTTP/1.1 100 Continue\r\n\r\n");
            stream_.expires_after(t_.opt_.write_timeout);
            boost::asio::async_write(stream_, boost::asio::buffer(*cont), [self = shared_from_this(), cont](error_code ec, std::size_t) {
                if (ec) return self->close();
                self->read_body();
            });
            return;
        }
        read_body();
    }

    void read_body() {
        stream_.expires_after(t_.opt_.body_timeout);
        boost::beast::http::async_read(stream_, buffer_, *parser_, [self = shared_from_this()](error_code ec, std::size_t) {
            if (ec) return self->on_read_error(ec, /*in_body=*/true);
            self->on_request();
        });
    }

    void on_read_error(error_code ec, bool in_body) {
        namespace bhttp = boost::beast::http;
        // The peer closed or went quiet between requests: nothing to answer.
        if (ec == bhttp::error::end_of_stream || ec == boost::asio::error::eof || ec == boost::asio::error::connection_reset ||
            ec == boost::asio::error::operation_aborted)
            return close();
        if (ec == boost::beast::error::timeout) {
            if (!in_body) return close();
            return refuse(408, "the request body did not arrive within " +
                                   std::to_string(t_.opt_.body_timeout.count() / 1000) + " s");
        }
        if (ec == bhttp::error::body_limit)
            return refuse(413, "the request body is over the limit of " + std::to_string(t_.opt_.max_body_bytes) + " bytes");
        if (ec == bhttp::error::header_limit)
            return refuse(431, "the request headers are over the limit of " + std::to_string(t_.opt_.max_header_bytes) + " bytes");
        refuse(400, "malformed HTTP request (" + ec.message() + ")");
    }

    // ---- one complete request --------------------------------------------------------------
    void on_request() {
        namespace bhttp = boost::beast::http;
        auto& m = parser_->get();
        auto rq = std::make_shared<http::request>();
        rq->method = std::string(m.method_string());
        rq->target = std::string(m.target());
        rq->path = rq->target.substr(0, rq->target.find('?'));
        for (const auto& f : m) rq->headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
        rq->body = std::move(m.body());
        rq->remote = remote_;
        keep_alive_ = m.keep_alive();
        http10_ = m.version() < 11;
        head_ = rq->method == "HEAD";
        parser_.reset();
        stream_.expires_never();

        if (rq->method == "GET" && http::has_token(rq->header("Connection"), "upgrade") &&
            http::has_token(rq->header("Upgrade"), "websocket"))
            return upgrade(std::move(rq));
        boost::asio::post(t_.pool_, [self = shared_from_this(), rq] { self->answer(*rq); });
        // (`rq` is the lambda's only owner: answer() may let go of its body early.)
    }

    // Hands the socket to the upgrade handler on a thread of its own.
    void upgrade(std::shared_ptr<http::request> rq) {
        if (!t_.on_upgrade_) return refuse(404, "no WebSocket endpoint here");
        if (!t_.begin_upgrade())
            return refuse(503, "too many WebSocket sessions (the limit is " + std::to_string(t_.opt_.max_upgrades) + ")");
        transport* t = &t_;
        std::thread([t, rq, socket = stream_.release_socket()]() mutable {
            try {
                t->on_upgrade_(*rq, std::move(socket));
            } catch (...) {
                // The handler owns the socket and reports its own errors.
            }
            t->end_upgrade();
        }).detach();
    }

    // ---- answering (worker thread) -----------------------------------------------------------
    void answer(http::request& rq) {
        http::response res;
        if (t_.stopping_) res.status = 503, res.set_content(t_.error_body_(503, "the server is shutting down"), "application/json");
        else run_handler(rq, res);
        const bool big_body = rq.body.size() > (std::size_t(1) << 20);
        if (!res.stream) {
            send_whole(res);
        } else {
            send_streamed(res);
        }
        if (t_.log_) t_.log_(rq, res.status, std::chrono::duration<double, std::milli>(clock::now() - started_).count());
        if (big_body) {
            // The body and what was parsed from it are freed by now (the body here): hand the
            // pages back. glibc serves a large block from the heap once a block of its size was
            // unmapped (its mmap threshold grows), and a parse leaves many small blocks in this
            // worker's arena; without this each worker kept its high-water mark for good.
            std::string().swap(rq.body);
#if defined(__GLIBC__)
            ::malloc_trim(0);
#endif
        }
        boost::asio::post(stream_.get_executor(), [self = shared_from_this()] { self->next(); });
    }

    void run_handler(const http::request& rq, http::response& res) {
        if (t_.routes_.before && !t_.routes_.before(rq, res)) return;
        bool path_known = false;
        const http::handler* h = t_.routes_.find(rq.method, rq.path, &path_known);
        if (!h) {
            if (path_known) {
                res.status = 405;
                res.set_content(t_.error_body_(405, "method " + rq.method + " is not allowed on " + rq.path), "application/json");
            } else {
                res.status = 404;
                res.set_content(t_.error_body_(404, "no route for " + rq.method + " " + rq.path), "application/json");
            }
            return;
        }
        try {
            (*h)(rq, res);
        } catch (const std::exception& e) {
            res = http::response{};
            res.status = 500;
            res.set_content(t_.error_body_(500, e.what()), "application/json");
        } catch (...) {
            res = http::response{};
            res.status = 500;
            res.set_content(t_.error_body_(500, "internal error"), "application/json");
        }
    }

    std::string head_of(const http::response& res, bool chunked) {
        namespace bhttp = boost::beast::http;
        std::string h = http10_ ? "HTTP/1.0 " : "HTTP/1.1 ";
        h += std::to_string(res.status);
        h += ' ';
        h += std::string(bhttp::obsolete_reason(bhttp::int_to_status(static_cast<unsigned>(res.status))));
        h += "\r\nServer: lmtk\r\nContent-Type: " + res.content_type + "\r\n";
        for (const auto& [k, v] : res.headers) {
            if (http::iequals(k, "Connection") && http::has_token(v, "close")) keep_alive_ = false;
            if (http::iequals(k, "Connection") || http::iequals(k, "Content-Length") || http::iequals(k, "Transfer-Encoding")) continue;
            h += k + ": " + v + "\r\n";
        }
        if (chunked) h += "Transfer-Encoding: chunked\r\n";
        else if (!res.stream) h += "Content-Length: " + std::to_string(res.body.size()) + "\r\n";
        if (!keep_alive_) h += "Connection: close\r\n";
        else if (http10_) h += "Connection: keep-alive\r\n";
        h += "\r\n";
        return h;
    }

    void send_whole(const http::response& res) {
        std::string out = head_of(res, false);
        if (!head_) out += res.body;
        write_blocking(std::move(out));
    }

    void send_streamed(http::response& res) {
        // HTTP/1.0 has no chunked encoding: the body ends when the connection does.
        const bool chunked = !http10_;
        if (!chunked) keep_alive_ = false;
        if (!write_blocking(head_of(res, chunked)) || head_) return;
        fd_ = stream_.socket().native_handle();
        http::body_sink sink;
        sink.write = [this, chunked](std::string_view s) {
            if (dead_) return false;
            if (s.empty()) return alive();
            if (!chunked) return write_blocking(std::string(s));
            char size[24];
            const int n = std::snprintf(size, sizeof size, "%zx\r\n", s.size());
            std::string frame;
            frame.reserve(std::size_t(n) + s.size() + 2);
            frame.append(size, std::size_t(n)).append(s).append("\r\n");
            return write_blocking(std::move(frame));
        };
        sink.alive = [this] { return alive(); };
        res.stream(sink);
        if (!dead_ && chunked) write_blocking("0\r\n\r\n");
    }

    // The peer is still there: no hang-up or error on the socket (data it sent ahead, a pipelined
    // request, does not count as gone).
    bool alive() {
        if (dead_ || t_.stopping_) return false;
        pollfd p{fd_, POLLRDHUP, 0};
        if (::poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL))) {
            dead_ = true;
            return false;
        }
        return true;
    }

    // Writes through the I/O thread and waits for the result; false once the client is gone or
    // the write did not finish within write_timeout.
    bool write_blocking(std::string data) {
        if (dead_) return false;
        auto done = std::make_shared<std::promise<bool>>();
        auto result = done->get_future();
        auto buf = std::make_shared<std::string>(std::move(data));
        boost::asio::post(stream_.get_executor(), [self = shared_from_this(), done, buf] {
            self->stream_.expires_after(self->t_.opt_.write_timeout);
            boost::asio::async_write(self->stream_, boost::asio::buffer(*buf), [self, done, buf](error_code ec, std::size_t) {
                self->stream_.expires_never();
                done->set_value(!ec);
            });
        });
        // A stopped I/O thread never runs the write: give up when the server stops.
        while (result.wait_for(std::chrono::milliseconds(100)) != std::future_status::ready)
            if (t_.stopping_) {
                dead_ = true;
                return false;
            }
        try {
            if (!result.get()) dead_ = true;
        } catch (const std::future_error&) {
            dead_ = true;
        }
        return !dead_;
    }

    // After an answer (I/O thread): the next request on this connection, or the end of it.
    void next() {
        if (dead_ || !keep_alive_ || t_.stopping_) return close();
        read_header(t_.opt_.keep_alive_timeout);
    }

    // Answers a request that cannot be served with `status` and closes the connection (I/O thread).
    void refuse(int status, const std::string& message) {
        auto out = std::make_shared<std::string>(closing_response(status, t_.error_body_(status, message)));
        if (t_.log_) {
            http::request rq;
            rq.method = "-";
            rq.path = message;
            rq.remote = remote_;
            t_.log_(rq, status, 0.0);
        }
        stream_.expires_after(t_.opt_.write_timeout);
        boost::asio::async_write(stream_, boost::asio::buffer(*out), [self = shared_from_this(), out](error_code ec, std::size_t) {
            if (ec) return self->close();
            self->linger();
        });
    }

    // After an error answer, the client may still be sending (a body over the limit): closing
    // now, with its bytes unread, would reset the connection and could destroy the answer
    // before the client reads it. So stop sending, read and drop what still comes for a short
    // while, then close.
    void linger() {
        error_code ec;
        stream_.socket().shutdown(boost::asio::ip::tcp::socket::shutdown_send, ec);
        stream_.expires_after(std::chrono::seconds(2));
        drain_.resize(16384);
        drain_budget_ = std::size_t(8) << 20;
        drain();
    }
    void drain() {
        stream_.async_read_some(boost::asio::buffer(drain_), [self = shared_from_this()](error_code ec, std::size_t n) {
            if (ec || n >= self->drain_budget_) return self->close();
            self->drain_budget_ -= n;
            self->drain();
        });
    }

    void close() {
        error_code ec;
        stream_.socket().shutdown(boost::asio::ip::tcp::socket::shutdown_both, ec);
        stream_.close();
    }

    transport& t_;
    boost::beast::tcp_stream stream_;
    boost::beast::flat_buffer buffer_;
    std::optional<parser_type> parser_;
    std::string remote_;
    clock::time_point started_ = clock::now();
    bool keep_alive_ = true;
    bool http10_ = false;
    bool head_ = false;
    int fd_ = -1;
    std::atomic<bool> dead_{false};
    std::string drain_;
    std::size_t drain_budget_ = 0;
};

inline void transport::accept() {
    acceptor_.async_accept([this](boost::system::error_code ec, boost::asio::ip::tcp::socket s) {
        if (!ec) {
            std::make_shared<connection>(*this, std::move(s))->start();
            return accept();
        }
        if (!acceptor_.is_open() || stopping_) return;
        // Out of descriptors (EMFILE) and the like: try again shortly instead of spinning.
        retry_.expires_after(std::chrono::milliseconds(100));
        retry_.async_wait([this](boost::system::error_code) { accept(); });
    });
}

}  // namespace lmtk::serve
