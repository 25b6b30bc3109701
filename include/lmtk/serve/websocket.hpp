#pragma once
// lmtk::serve::ws: the part of WebSocket (RFC 6455) that LMTP needs, both ends.
//
//   ws::connection c(fd, ws::role::server);         // after the HTTP upgrade
//   while (auto m = c.receive(stop_flag)) c.send_text("echo " + m->data);
//
// Text and binary messages (fragmented or not) of up to `max_message` bytes; pings are answered
// and a close is echoed, as the RFC requires. A client masks what it sends, a server does not.
// Sending is thread-safe (LMTP streams are answered from several threads on one socket);
// receiving is for one thread. The socket is polled, never left blocked: receive() wakes every
// 200 ms to check its stop flag, and a send that cannot progress for `send_timeout` fails.
//
// Also here: the opening handshake (the Sec-WebSocket-Accept digest needs SHA-1 and base64,
// written out below because the server links no crypto library) and a client connect().
#include <lmtk/core/error.hpp>

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include <array>
#include <cctype>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <string_view>

namespace lmtk::serve::ws {

// ---- handshake digests -------------------------------------------------------------------------

// SHA-1 (FIPS 180-4). Only the handshake uses it: it proves nothing about security here.
inline std::array<std::uint8_t, 20> sha1(std::string_view data) {
    std::uint32_t h[5] = {0x67452301u, 0xEFCDAB89u, 0x98BADCFEu, 0x10325476u, 0xC3D2E1F0u};
    auto rol = [](std::uint32_t x, int n) { return (x << n) | (x >> (32 - n)); };
    std::string msg(data);
    const std::uint64_t bits = std::uint64_t(data.size()) * 8;
    msg += '\x80';
    while (msg.size() % 64 != 56) msg += '\0';
    for (int i = 7; i >= 0; --i) msg += static_cast<char>((bits >> (8 * i)) & 0xff);
    for (std::size_t off = 0; off < msg.size(); off += 64) {
        std::uint32_t w[80];
        for (int i = 0; i < 16; ++i) {
            const auto* p = reinterpret_cast<const unsigned char*>(msg.data() + off + 4 * i);
            w[i] = std::uint32_t(p[0]) << 24 | std::uint32_t(p[1]) << 16 | std::uint32_t(p[2]) << 8 | p[3];
        }
        for (int i = 16; i < 80; ++i) w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
        std::uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
        for (int i = 0; i < 80; ++i) {
            std::uint32_t f, k;
            if (i < 20) f = (b & c) | (~b & d), k = 0x5A827999u;
            else if (i < 40) f = b ^ c ^ d, k = 0x6ED9EBA1u;
            else if (i < 60) f = (b & c) | (b & d) | (c & d), k = 0x8F1BBCDCu;
            else f = b ^ c ^ d, k = 0xCA62C1D6u;
            const std::uint32_t t = rol(a, 5) + f + e + k + w[i];
            e = d, d = c, c = rol(b, 30), b = a, a = t;
        }
        h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e;
    }
    std::array<std::uint8_t, 20> out{};
    for (int i = 0; i < 5; ++i)
        for (int j = 0; j < 4; ++j) out[std::size_t(4 * i + j)] = static_cast<std::uint8_t>(h[i] >> (24 - 8 * j));
    return out;
}

inline std::string base64(std::span<const std::uint8_t> in) {
    static constexpr char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    for (std::size_t i = 0; i < in.size(); i += 3) {
        const std::uint32_t n = std::uint32_t(in[i]) << 16 | (i + 1 < in.size() ? std::uint32_t(in[i + 1]) << 8 : 0) |
                                (i + 2 < in.size() ? in[i + 2] : 0);
        out += alphabet[(n >> 18) & 63];
        out += alphabet[(n >> 12) & 63];
        out += i + 1 < in.size() ? alphabet[(n >> 6) & 63] : '=';
        out += i + 2 < in.size() ? alphabet[n & 63] : '=';
    }
    return out;
}

// The server's answer to a client's Sec-WebSocket-Key.
inline std::string accept_key(std::string_view client_key) {
    const auto digest = sha1(std::string(client_key) + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    return base64(digest);
}

// ---- frames ------------------------------------------------------------------------------------

enum class opcode : std::uint8_t { continuation = 0, text = 1, binary = 2, close = 8, ping = 9, pong = 10 };
enum class role { server, client };

struct message {
    opcode type = opcode::text;
    std::string data;
};

class connection_closed : public error {
public:
    using error::error;
};

class connection {
public:
    // Takes over a connected socket (closes it when destroyed).
    connection(int fd, role r, std::size_t max_message = std::size_t(16) << 20,
               std::chrono::milliseconds send_timeout = std::chrono::seconds(30))
        : fd_(fd), role_(r), max_message_(max_message), send_timeout_(send_timeout) {}
    connection(const connection&) = delete;
    connection& operator=(const connection&) = delete;
    ~connection() {
        if (fd_ >= 0) {
            ::shutdown(fd_, SHUT_RDWR);
            ::close(fd_);
        }
    }

    bool open() const noexcept { return !closed_.load(); }
    bool timed_out() const noexcept { return timed_out_; }

    // The next data message; nullopt once the peer closed, the connection broke, a protocol
    // error happened (the peer then gets a close frame with its code), `stop` became true or
    // nothing arrived for `timeout` (then timed_out() is true and the connection stays usable).
    std::optional<message> receive(const std::atomic<bool>* stop = nullptr,
                                   std::chrono::milliseconds timeout = std::chrono::milliseconds::max()) {
        timed_out_ = false;
        deadline_ = timeout == std::chrono::milliseconds::max() ? std::chrono::steady_clock::time_point::max()
                                                                : std::chrono::steady_clock::now() + timeout;
        std::optional<message> partial;
        while (open()) {
            frame f;
            if (!read_frame(f, stop)) break;
            switch (f.op) {
                case opcode::ping: send_frame(opcode::pong, f.payload); continue;
                case opcode::pong: continue;
                case opcode::close:
                    send_frame(opcode::close, std::string_view(f.payload).substr(0, std::min<std::size_t>(f.payload.size(), 2)));
                    closed_ = true;
                    return std::nullopt;
                case opcode::text:
                case opcode::binary:
                    if (partial) { protocol_error(1002, "a new message began inside a fragmented one"); return std::nullopt; }
                    if (f.fin) return message{f.op, std::move(f.payload)};
                    partial = message{f.op, std::move(f.payload)};
                    continue;
                case opcode::continuation:
                    if (!partial) { protocol_error(1002, "a continuation frame without a message"); return std::nullopt; }
                    if (partial->data.size() + f.payload.size() > max_message_) { protocol_error(1009, "message too big"); return std::nullopt; }
                    partial->data += f.payload;
                    if (f.fin) return partial;
                    continue;
                default: { protocol_error(1002, "unknown opcode"); return std::nullopt; }
            }
        }
        return std::nullopt;
    }

    bool send_text(std::string_view s) { return send_frame(opcode::text, s); }

    // Sends a close frame (once) and stops using the connection.
    void close(std::uint16_t code = 1000, std::string_view reason = {}) {
        if (!open()) return;
        std::string p;
        p += static_cast<char>(code >> 8);
        p += static_cast<char>(code & 0xff);
        p += reason.substr(0, 120);
        send_frame(opcode::close, p);
        closed_ = true;
    }

    int fd() const noexcept { return fd_; }

    // Bytes that arrived with the handshake response, before the first frame (client side).
    void prepend(std::string_view bytes) { in_.insert(0, bytes); }

private:
    struct frame {
        bool fin = true;
        opcode op = opcode::text;
        std::string payload;
    };

    // Tells the peer why (RFC 6455 close codes) and stops using the connection.
    void protocol_error(std::uint16_t code, std::string_view why) { close(code, why); }

    // Makes `n` bytes available in in_; false when the peer went away or `stop` was raised.
    bool fill(std::size_t n, const std::atomic<bool>* stop) {
        while (in_.size() - pos_ < n) {
            if (stop && stop->load()) return false;
            if (std::chrono::steady_clock::now() >= deadline_) {
                timed_out_ = true;
                return false;
            }
            pollfd p{fd_, POLLIN, 0};
            const int r = ::poll(&p, 1, 200);
            if (r < 0 && errno == EINTR) continue;
            if (r < 0) return fail_read();
            if (r == 0) continue;
            char buf[65536];
            const ssize_t got = ::recv(fd_, buf, sizeof buf, 0);
            if (got < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
            if (got <= 0) return fail_read();
            if (pos_ > 0 && pos_ == in_.size()) in_.clear(), pos_ = 0;
            in_.append(buf, std::size_t(got));
        }
        return true;
    }
    bool fail_read() {
        closed_ = true;
        return false;
    }

    bool read_frame(frame& f, const std::atomic<bool>* stop) {
        if (!fill(2, stop)) return false;
        const auto b0 = static_cast<std::uint8_t>(in_[pos_]), b1 = static_cast<std::uint8_t>(in_[pos_ + 1]);
        f.fin = (b0 & 0x80) != 0;
        f.op = static_cast<opcode>(b0 & 0x0f);
        const bool masked = (b1 & 0x80) != 0;
        std::uint64_t len = b1 & 0x7f;
        std::size_t head = 2;
        if (b0 & 0x70) { protocol_error(1002, "reserved bits set (no extension was negotiated)"); return false; }
        // A client must mask, a server must not (RFC 6455 5.1).
        if (masked != (role_ == role::server)) { protocol_error(1002, "wrong masking"); return false; }
        if (len == 126) {
            if (!fill(4, stop)) return false;
            len = std::uint64_t(std::uint8_t(in_[pos_ + 2])) << 8 | std::uint8_t(in_[pos_ + 3]);
            head = 4;
        } else if (len == 127) {
            if (!fill(10, stop)) return false;
            len = 0;
            for (int i = 0; i < 8; ++i) len = len << 8 | std::uint8_t(in_[pos_ + 2 + std::size_t(i)]);
            head = 10;
        }
        const bool control = (b0 & 0x08) != 0;
        if (control && (len > 125 || !f.fin)) { protocol_error(1002, "bad control frame"); return false; }
        if (len > max_message_) { protocol_error(1009, "message too big"); return false; }
        const std::size_t mask_at = head;
        if (masked) head += 4;
        if (!fill(head + std::size_t(len), stop)) return false;
        f.payload.assign(in_, pos_ + head, std::size_t(len));
        if (masked) {
            const char* m = in_.data() + pos_ + mask_at;
            for (std::size_t i = 0; i < f.payload.size(); ++i) f.payload[i] = static_cast<char>(f.payload[i] ^ m[i & 3]);
        }
        pos_ += head + std::size_t(len);
        return true;
    }

    bool send_frame(opcode op, std::string_view payload) {
        std::lock_guard lock(send_mu_);
        if (closed_) return false;
        std::string out;
        out.reserve(payload.size() + 14);
        out += static_cast<char>(0x80 | static_cast<std::uint8_t>(op));
        const std::uint8_t mask_bit = role_ == role::client ? 0x80 : 0;
        if (payload.size() < 126) {
            out += static_cast<char>(mask_bit | payload.size());
        } else if (payload.size() <= 0xffff) {
            out += static_cast<char>(mask_bit | 126);
            out += static_cast<char>(payload.size() >> 8);
            out += static_cast<char>(payload.size() & 0xff);
        } else {
            out += static_cast<char>(mask_bit | 127);
            for (int i = 7; i >= 0; --i) out += static_cast<char>((std::uint64_t(payload.size()) >> (8 * i)) & 0xff);
        }
        if (role_ == role::client) {
            std::uint32_t k = static_cast<std::uint32_t>(mask_gen_());
            char m[4];
            std::memcpy(m, &k, 4);
            out.append(m, 4);
            const std::size_t at = out.size();
            out += payload;
            for (std::size_t i = 0; i < payload.size(); ++i) out[at + i] = static_cast<char>(out[at + i] ^ m[i & 3]);
        } else {
            out += payload;
        }
        const auto deadline = std::chrono::steady_clock::now() + send_timeout_;
        std::size_t sent = 0;
        while (sent < out.size()) {
            pollfd p{fd_, POLLOUT, 0};
            const int r = ::poll(&p, 1, 200);
            if (r < 0 && errno != EINTR) break;
            if (r > 0) {
                const ssize_t n = ::send(fd_, out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
                if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
                if (n <= 0) break;
                sent += std::size_t(n);
            }
            if (sent < out.size() && std::chrono::steady_clock::now() > deadline) break;
        }
        if (sent < out.size()) {
            closed_ = true;
            return false;
        }
        return true;
    }

    int fd_;
    role role_;
    std::size_t max_message_;
    std::chrono::milliseconds send_timeout_;
    std::string in_;
    std::size_t pos_ = 0;
    bool timed_out_ = false;
    std::chrono::steady_clock::time_point deadline_ = std::chrono::steady_clock::time_point::max();
    std::atomic<bool> closed_{false};
    std::mutex send_mu_;
    std::mt19937 mask_gen_{std::random_device{}()};
};

// ---- client side -----------------------------------------------------------------------------

// Opens a TCP connection to host:port (connect() bounded by `timeout`); throws lmtk::error.
inline int connect_socket(const std::string& host, int port, std::chrono::milliseconds timeout) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    const std::string service = std::to_string(port);
    if (const int rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &res); rc != 0)
        fail("cannot resolve ", host, ": ", ::gai_strerror(rc));
    int fd = -1;
    std::string why = "no address";
    for (addrinfo* a = res; a; a = a->ai_next) {
        fd = ::socket(a->ai_family, a->ai_socktype, a->ai_protocol);
        if (fd < 0) continue;
        timeval tv{static_cast<time_t>(timeout.count() / 1000), static_cast<suseconds_t>((timeout.count() % 1000) * 1000)};
        ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);  // bounds connect()
        if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0) break;
        why = std::strerror(errno);
        ::close(fd);
        fd = -1;
    }
    ::freeaddrinfo(res);
    if (fd < 0) fail("cannot connect to ", host, ":", port, ": ", why);
    return fd;
}

// The client's opening handshake for `path` on a connected socket; returns the connection, which
// owns the socket from then on. Throws lmtk::error, with the server's status line when it
// refused the upgrade.
inline std::unique_ptr<connection> client_handshake(int fd, const std::string& host, int port, const std::string& path,
                                                    const std::string& extra_headers, std::chrono::milliseconds timeout) {
    std::array<std::uint8_t, 16> nonce{};
    std::random_device rd;
    for (auto& b : nonce) b = static_cast<std::uint8_t>(rd());
    const std::string key = base64(nonce);
    const std::string req = "GET " + path + " HTTP/1.1\r\nHost: " + host + ":" + std::to_string(port) +
                            "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + key +
                            "\r\nSec-WebSocket-Version: 13\r\n" + extra_headers + "\r\n";
    auto conn = std::make_unique<connection>(fd, role::client);
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (std::size_t sent = 0; sent < req.size();) {
        const ssize_t n = ::send(fd, req.data() + sent, req.size() - sent, MSG_NOSIGNAL);
        if (n <= 0) fail("the WebSocket handshake could not be sent: ", std::strerror(errno));
        sent += std::size_t(n);
    }
    std::string resp;
    std::size_t end = std::string::npos;
    while ((end = resp.find("\r\n\r\n")) == std::string::npos) {
        if (resp.size() > 65536) fail("the WebSocket handshake response is too long");
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) fail("no WebSocket handshake response within ", timeout.count(), " ms");
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
        char buf[4096];
        const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n <= 0) fail("the server closed the connection during the WebSocket handshake");
        resp.append(buf, std::size_t(n));
    }
    const std::string head = resp.substr(0, end);
    const std::string status = head.substr(0, head.find("\r\n"));
    if (status.rfind("HTTP/1.1 101", 0) != 0) {
        const std::string body = resp.substr(end + 4, 300);
        fail("the server refused the WebSocket upgrade: ", status, body.empty() ? "" : " ", body);
    }
    // Header names are case-insensitive, the accept value is not.
    std::string lower = head;
    for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    const std::size_t at = lower.find("\r\nsec-websocket-accept:");
    std::string got;
    if (at != std::string::npos) {
        const std::size_t v = at + std::strlen("\r\nsec-websocket-accept:");
        got = head.substr(v, head.find("\r\n", v) - v);
        while (!got.empty() && (got.front() == ' ' || got.front() == '\t')) got.erase(got.begin());
        while (!got.empty() && (got.back() == ' ' || got.back() == '\t')) got.pop_back();
    }
    if (got != accept_key(key)) fail("the server's Sec-WebSocket-Accept does not match the key");
    conn->prepend(std::string_view(resp).substr(end + 4));
    return conn;
}

}  // namespace lmtk::serve::ws
