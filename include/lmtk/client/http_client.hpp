#pragma once
// A blocking HTTP/1.1 client on Boost.Beast, for lmtk's remote models: one connection, one
// request at a time, the response body handed over piece by piece as it arrives (a streamed
// completion is read while the server writes it). Every step has a deadline: connecting,
// writing the request, and each wait for bytes from the server. cancel() may be called from
// another thread and ends the request in progress at once.
//
// Each operation runs asynchronously on a private io_context that the calling thread drives
// until the operation completes: that is how Asio gives a deadline to a blocking call.
#include <lmtk/core/error.hpp>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lmtk::client {

// "http://host:port/prefix" split up; the prefix has no trailing '/'.
struct url_parts {
    std::string host;
    std::string port;
    std::string prefix;
};

// Throws lmtk::error for anything but an http:// URL (https:// needs TLS, which lmtk does not link).
inline url_parts parse_http_url(const std::string& url, const char* who) {
    const std::size_t scheme = url.find("://");
    if (scheme == std::string::npos || url.compare(0, scheme, "http") != 0) {
        if (scheme != std::string::npos && url.compare(0, scheme, "https") == 0)
            fail(who, ": '", url, "' is https://, which lmtk's client does not speak (put a TLS proxy in front or use http://)");
        fail(who, ": '", url, "' is not an http:// URL");
    }
    const std::size_t start = scheme + 3;
    const std::size_t slash = url.find('/', start);
    std::string authority = url.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
    url_parts u;
    u.prefix = slash == std::string::npos ? std::string() : url.substr(slash);
    while (!u.prefix.empty() && u.prefix.back() == '/') u.prefix.pop_back();
    if (const std::size_t at = authority.rfind('@'); at != std::string::npos) authority.erase(0, at + 1);
    if (!authority.empty() && authority.front() == '[') {  // [IPv6]:port
        const std::size_t close = authority.find(']');
        if (close == std::string::npos) fail(who, ": '", url, "' has an unterminated [IPv6] host");
        u.host = authority.substr(1, close - 1);
        if (close + 1 < authority.size() && authority[close + 1] == ':') u.port = authority.substr(close + 2);
    } else {
        const std::size_t colon = authority.rfind(':');
        u.host = authority.substr(0, colon);
        if (colon != std::string::npos) u.port = authority.substr(colon + 1);
    }
    if (u.port.empty()) u.port = "80";
    if (u.host.empty()) fail(who, ": '", url, "' names no host");
    for (const char c : u.port)
        if (c < '0' || c > '9') fail(who, ": '", url, "' has a port that is not a number");
    return u;
}

struct client_timeouts {
    std::chrono::milliseconds connect{10'000};
    std::chrono::milliseconds write{60'000};
    std::chrono::milliseconds read{600'000};  // longest silence while waiting for the server
};

// How a request ended, when it did not end with the whole response read.
enum class request_end { complete, stopped_by_reader, cancelled };

class http_connection {
public:
    http_connection(std::string host, std::string port, client_timeouts t, std::string who = "lmtk::client")
        : host_(std::move(host)), port_(std::move(port)), t_(t), who_(std::move(who)) {}
    http_connection(const http_connection&) = delete;
    http_connection& operator=(const http_connection&) = delete;

    // Sends one request and reads the answer: on_status(status) once the status line and
    // headers are in, then on_body(bytes) for each piece of the body (false: stop reading).
    // Throws lmtk::error when it cannot connect, the server goes quiet past the read deadline,
    // or the connection ends before the response does.
    template <class OnStatus, class OnBody>
    request_end request(std::string_view method, const std::string& target,
                        const std::vector<std::pair<std::string, std::string>>& headers, const std::string& body,
                        OnStatus&& on_status, OnBody&& on_body) {
        namespace bhttp = boost::beast::http;
        if (cancelled_) return request_end::cancelled;
        if (!stream_.socket().is_open()) connect();
        if (cancelled_) return request_end::cancelled;

        bhttp::request<bhttp::string_body> req;
        req.method_string(boost::beast::string_view(method.data(), method.size()));
        req.target(target);
        req.version(11);
        req.set(bhttp::field::host, host_ + ":" + port_);
        req.set(bhttp::field::user_agent, "lmtk");
        for (const auto& [k, v] : headers) req.set(k, v);
        req.body() = body;
        req.prepare_payload();
        boost::system::error_code ec;
        stream_.expires_after(t_.write);
        bhttp::async_write(stream_, req, [&](boost::system::error_code e, std::size_t) { ec = e; });
        drive();
        if (cancelled_) return request_end::cancelled;
        if (ec) fail(who_, ": sending the request to ", where(), " failed: ", ec.message());

        bhttp::response_parser<bhttp::buffer_body> parser;
        parser.body_limit(std::numeric_limits<std::uint64_t>::max());  // a stream has no length to check
        stream_.expires_after(t_.read);
        bhttp::async_read_header(stream_, buffer_, parser, [&](boost::system::error_code e, std::size_t) { ec = e; });
        drive();
        if (cancelled_) return request_end::cancelled;
        if (ec == boost::beast::error::timeout)
            fail(who_, ": ", where(), " sent no response within ", t_.read.count() / 1000, " s");
        if (ec) fail(who_, ": reading the response from ", where(), " failed: ", ec.message());
        on_status(static_cast<int>(parser.get().result_int()));

        char piece[16384];
        while (!parser.is_done()) {
            parser.get().body().data = piece;
            parser.get().body().size = sizeof piece;
            stream_.expires_after(t_.read);
            bhttp::async_read(stream_, buffer_, parser, [&](boost::system::error_code e, std::size_t) { ec = e; });
            drive();
            if (cancelled_) return request_end::cancelled;
            if (ec == bhttp::error::need_buffer) ec = {};
            if (ec == boost::beast::error::timeout)
                fail(who_, ": reading the stream from ", where(), " failed (silent for ", t_.read.count() / 1000, " s)");
            if (ec) fail(who_, ": reading the stream from ", where(), " failed (closed early: ", ec.message(), ")");
            const std::size_t n = sizeof piece - parser.get().body().size;
            if (n && !on_body(std::string_view(piece, n))) {
                close();  // the rest of the response is not wanted: this connection cannot carry another request
                return request_end::stopped_by_reader;
            }
        }
        if (!parser.get().keep_alive()) close();
        return request_end::complete;
    }

    // From any thread: the request in progress (and any later one) ends as cancelled.
    void cancel() {
        cancelled_ = true;
        boost::asio::post(ioc_, [this] { stream_.cancel(); });
    }

    void close() {
        boost::system::error_code ec;
        stream_.socket().shutdown(boost::asio::ip::tcp::socket::shutdown_both, ec);
        stream_.close();
    }

private:
    std::string where() const { return "http://" + host_ + ":" + port_; }

    // Runs the private context until the operation started just before completes.
    void drive() {
        ioc_.restart();
        ioc_.run();
    }

    void connect() {
        boost::system::error_code ec;
        boost::asio::ip::tcp::resolver resolver(ioc_);
        const auto endpoints = resolver.resolve(host_, port_, ec);
        if (ec) fail(who_, ": cannot resolve '", host_, "': ", ec.message());
        stream_.expires_after(t_.connect);
        stream_.async_connect(endpoints, [&](boost::system::error_code e, const auto&) { ec = e; });
        drive();
        if (cancelled_) return;
        if (ec == boost::beast::error::timeout)
            fail(who_, ": cannot connect to ", where(), " within ", t_.connect.count() / 1000, " s");
        if (ec) fail(who_, ": cannot connect to ", where(), " (connection refused or nothing listening: ", ec.message(), ")");
        stream_.socket().set_option(boost::asio::ip::tcp::no_delay(true), ec);
    }

    std::string host_, port_;
    client_timeouts t_;
    std::string who_;
    std::atomic<bool> cancelled_{false};
    boost::asio::io_context ioc_{1};
    boost::beast::tcp_stream stream_{ioc_};
    boost::beast::flat_buffer buffer_;
};

}  // namespace lmtk::client
