#pragma once
// The server's end of one WebSocket connection, on Boost.Beast, for a session that runs on a
// thread of its own (LMTP): receive() blocks that thread until the next message, send_text()
// may be called from any thread (a session's streams answer concurrently). The socket's I/O runs
// on the transport's I/O thread, like every other connection's, so a session costs its own
// thread and no more.
//
// Limits: a message (its fragments together) of at most `max_message` bytes, else the peer gets
// close code 1009; an idle peer is pinged, and one that answers nothing within the idle timeout
// is dropped; a send that cannot be written within 30 s closes the connection (a peer that does
// not read).
#include <lmtk/core/error.hpp>
#include <lmtk/serve/http.hpp>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

namespace lmtk::serve {

struct ws_message {
    bool text = true;
    std::string data;
};

struct ws_options {
    std::size_t max_message = std::size_t(16) << 20;
    std::chrono::seconds idle_timeout{300};        // no byte from the peer (pings included) this long: dropped
    std::chrono::seconds handshake_timeout{10};
    std::chrono::seconds send_timeout{30};
};

class ws_channel {
public:
    // Answers the opening handshake of `req` (already read by the transport) on `socket`.
    // Throws lmtk::error when the request is no valid upgrade (Beast has answered it with 400).
    ws_channel(boost::asio::ip::tcp::socket socket, const http::request& req, ws_options opt = {})
        : s_(std::make_shared<state>(std::move(socket), opt)) {
        namespace bhttp = boost::beast::http;
        namespace websocket = boost::beast::websocket;
        bhttp::request<bhttp::empty_body> up;
        up.method_string(req.method);
        up.target(req.target);
        up.version(11);
        for (const auto& [k, v] : req.headers) up.insert(k, v);
        auto& ws = s_->ws;
        websocket::stream_base::timeout t{};
        t.handshake_timeout = opt.handshake_timeout;
        t.idle_timeout = opt.idle_timeout;
        t.keep_alive_pings = true;
        ws.set_option(t);
        ws.set_option(websocket::stream_base::decorator([](websocket::response_type& res) { res.set(bhttp::field::server, "lmtk"); }));
        ws.read_message_max(opt.max_message);
        auto done = std::make_shared<std::promise<boost::system::error_code>>();
        auto result = done->get_future();
        auto request = std::make_shared<bhttp::request<bhttp::empty_body>>(std::move(up));
        boost::asio::post(ws.get_executor(), [s = s_, done, request] {
            s->ws.async_accept(*request, [s, done, request](boost::system::error_code ec) { done->set_value(ec); });
        });
        const auto ec = wait(result, opt.handshake_timeout + std::chrono::seconds(1));
        if (!ec || *ec) {
            close_socket();
            fail("WebSocket handshake failed: ", ec ? ec->message() : std::string("timed out"));
        }
        boost::asio::post(s_->ws.get_executor(), [s = s_] { read_next(s); });
    }
    ws_channel(const ws_channel&) = delete;
    ws_channel& operator=(const ws_channel&) = delete;
    ~ws_channel() { close_socket(); }

    // The next data message; nullopt once the connection ended or *stop became true (checked
    // every 200 ms).
    std::optional<ws_message> receive(const std::atomic<bool>* stop = nullptr) {
        std::unique_lock lock(s_->mu);
        for (;;) {
            if (!s_->inbox.empty()) {
                ws_message m = std::move(s_->inbox.front());
                s_->inbox.pop_front();
                if (s_->paused && s_->inbox.size() < state::inbox_limit) {
                    s_->paused = false;
                    boost::asio::post(s_->ws.get_executor(), [s = s_] { read_next(s); });
                }
                return m;
            }
            if (s_->closed) return std::nullopt;
            if (stop && *stop) return std::nullopt;
            s_->cv.wait_for(lock, std::chrono::milliseconds(200));
        }
    }

    // Sends one text message (any thread; in order of the calls); false once the connection is
    // closed or the peer did not take the message within the send timeout (then it is closed).
    bool send_text(std::string_view text) {
        if (!open()) return false;
        auto done = std::make_shared<std::promise<bool>>();
        auto result = done->get_future();
        boost::asio::post(s_->ws.get_executor(), [s = s_, done, msg = std::string(text)]() mutable {
            s->outbox.push_back({std::move(msg), done});
            if (s->outbox.size() == 1) write_next(s);
        });
        const auto ok = wait(result, s_->opt.send_timeout);
        if (!ok || !*ok) {
            close_socket();
            return false;
        }
        return true;
    }

    bool open() const noexcept { return !s_->closed; }

    // Sends a close frame (at most once) and waits a moment for it to go out.
    void close(std::uint16_t code = 1000, std::string_view reason = {}) {
        if (!open()) return;
        auto done = std::make_shared<std::promise<bool>>();
        auto result = done->get_future();
        boost::asio::post(s_->ws.get_executor(), [s = s_, done, code, why = std::string(reason)] {
            s->ws.async_close(boost::beast::websocket::close_reason(static_cast<boost::beast::websocket::close_code>(code), why),
                              [s, done](boost::system::error_code) { done->set_value(true); });
        });
        wait(result, std::chrono::seconds(1));
        close_socket();
    }

private:
    struct outgoing {
        std::string text;
        std::shared_ptr<std::promise<bool>> done;
    };
    // Shared with the handlers in flight on the I/O thread, which may outlive the channel.
    struct state {
        static constexpr std::size_t inbox_limit = 256;  // messages read ahead of the session; then reading pauses
        state(boost::asio::ip::tcp::socket socket, ws_options o) : ws(std::move(socket)), opt(o) {}
        boost::beast::websocket::stream<boost::beast::tcp_stream> ws;
        ws_options opt;
        boost::beast::flat_buffer in;
        std::deque<outgoing> outbox;  // I/O thread only
        std::mutex mu;
        std::condition_variable cv;
        std::deque<ws_message> inbox;  // under mu
        bool paused = false;           // under mu
        std::atomic<bool> closed{false};
    };

    template <class T>
    static std::optional<T> wait(std::future<T>& f, std::chrono::nanoseconds limit) {
        if (f.wait_for(limit) != std::future_status::ready) return std::nullopt;
        try {
            return f.get();
        } catch (const std::future_error&) {  // the I/O thread stopped and dropped the handler
            return std::nullopt;
        }
    }

    static void read_next(const std::shared_ptr<state>& s) {
        s->ws.async_read(s->in, [s](boost::system::error_code ec, std::size_t) {
            std::lock_guard lock(s->mu);
            if (ec) {
                s->closed = true;
            } else {
                s->inbox.push_back({s->ws.got_text(), boost::beast::buffers_to_string(s->in.data())});
                s->in.consume(s->in.size());
                if (s->inbox.size() >= state::inbox_limit) s->paused = true;
                else read_next(s);
            }
            s->cv.notify_all();
        });
    }

    static void write_next(const std::shared_ptr<state>& s) {
        s->ws.text(true);
        s->ws.async_write(boost::asio::buffer(s->outbox.front().text), [s](boost::system::error_code ec, std::size_t) {
            s->outbox.front().done->set_value(!ec);
            s->outbox.pop_front();
            if (ec) {
                s->closed = true;
                s->cv.notify_all();
                for (auto& o : s->outbox) o.done->set_value(false);
                s->outbox.clear();
                return;
            }
            if (!s->outbox.empty()) write_next(s);
        });
    }

    void close_socket() {
        s_->closed = true;
        s_->cv.notify_all();
        boost::asio::post(s_->ws.get_executor(), [s = s_] {
            boost::system::error_code ec;
            auto& sock = boost::beast::get_lowest_layer(s->ws).socket();
            sock.shutdown(boost::asio::ip::tcp::socket::shutdown_both, ec);
            sock.close(ec);
        });
    }

    std::shared_ptr<state> s_;
};

}  // namespace lmtk::serve
