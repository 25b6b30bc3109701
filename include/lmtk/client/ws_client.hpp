#pragma once
// A blocking WebSocket client on Boost.Beast (the LMTP client's transport): connect with the
// opening handshake, send text messages, receive messages with a deadline. One thread uses a
// connection; each call runs its operation on a private io_context until it completes, which is
// how Asio gives a blocking call a deadline.
#include <lmtk/core/error.hpp>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace lmtk::client {

class ws_connection {
public:
    // Connects to host:port and upgrades `target`; throws lmtk::error (with the server's status
    // when it refused the upgrade).
    ws_connection(const std::string& host, const std::string& port, const std::string& target, std::chrono::milliseconds timeout,
                  std::size_t max_message = std::size_t(64) << 20) {
        namespace websocket = boost::beast::websocket;
        boost::system::error_code ec;
        boost::asio::ip::tcp::resolver resolver(ioc_);
        const auto endpoints = resolver.resolve(host, port, ec);
        if (ec) fail("cannot resolve ", host, ": ", ec.message());
        auto& tcp = boost::beast::get_lowest_layer(ws_);
        tcp.expires_after(timeout);
        tcp.async_connect(endpoints, [&](boost::system::error_code e, const auto&) { ec = e; });
        drive();
        if (ec) fail("cannot connect to ", host, ":", port, ": ", ec.message());
        tcp.socket().set_option(boost::asio::ip::tcp::no_delay(true), ec);
        websocket::response_type res;
        tcp.expires_after(timeout);
        ws_.async_handshake(res, host + ":" + port, target, [&](boost::system::error_code e) { ec = e; });
        drive();
        if (ec) {
            if (res.result_int() != 0 && res.result_int() != 101)
                fail("the server refused the WebSocket upgrade: HTTP ", res.result_int(), " ", std::string(res.reason()));
            fail("the WebSocket handshake with ", host, ":", port, " failed: ", ec.message());
        }
        // From here the WebSocket layer keeps time (Beast's rule: no TCP deadline under it).
        tcp.expires_never();
        ws_.read_message_max(max_message);
        ws_.text(true);
    }

    bool open() const noexcept { return open_; }
    bool timed_out() const noexcept { return timed_out_; }

    bool send_text(std::string_view text) {
        if (!open_) return false;
        boost::system::error_code ec;
        ws_.async_write(boost::asio::buffer(text.data(), text.size()), [&](boost::system::error_code e, std::size_t) { ec = e; });
        drive();
        if (ec) open_ = false;
        return open_;
    }

    // The next text message; nullopt when the connection ended or nothing came within `timeout`
    // (then timed_out() is true and the connection is closed: a read cannot be resumed).
    std::optional<std::string> receive(std::chrono::milliseconds timeout) {
        for (;;) {
            if (!open_) return std::nullopt;
            boost::system::error_code ec;
            bool done = false;
            buffer_.consume(buffer_.size());
            ws_.async_read(buffer_, [&](boost::system::error_code e, std::size_t) {
                ec = e;
                done = true;
            });
            ioc_.restart();
            ioc_.run_for(timeout);
            if (!done) {
                timed_out_ = true;
                close_now();
                return std::nullopt;
            }
            if (ec) {
                open_ = false;
                return std::nullopt;
            }
            if (!ws_.got_text()) continue;  // binary messages are not LMTP's
            return boost::beast::buffers_to_string(buffer_.data());
        }
    }

    void close(std::uint16_t code = 1000) {
        if (!open_) return;
        ws_.async_close(code, [](boost::system::error_code) {});
        ioc_.restart();
        ioc_.run_for(std::chrono::seconds(1));
        close_now();
    }

    ~ws_connection() {
        if (open_) close_now();
    }

private:
    void drive() {
        ioc_.restart();
        ioc_.run();
    }
    void close_now() {
        open_ = false;
        boost::system::error_code ec;
        auto& sock = boost::beast::get_lowest_layer(ws_).socket();
        sock.shutdown(boost::asio::ip::tcp::socket::shutdown_both, ec);
        sock.close(ec);
        // Let the cancelled operations finish before the stream can go away.
        ioc_.restart();
        ioc_.run();
    }

    boost::asio::io_context ioc_{1};
    boost::beast::websocket::stream<boost::beast::tcp_stream> ws_{ioc_};
    boost::beast::flat_buffer buffer_;
    bool open_ = true;
    bool timed_out_ = false;
};

}  // namespace lmtk::client
