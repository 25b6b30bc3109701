// The WebSocket ends lmtk uses for LMTP, on Boost.Beast: the server's ws_channel (handed its
// socket by lmtk's transport after the upgrade request) and the client's ws_connection. The
// frames of the protocol checks are written by hand here, byte by byte (RFC 6455 section 5),
// not by the code under test; the handshake is checked against the RFC's own example key.
#include <catch2/catch.hpp>

#ifdef LMTK_HAVE_SERVE
#include <lmtk/client/ws_client.hpp>
#include <lmtk/serve/transport.hpp>
#include <lmtk/serve/ws_channel.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <thread>

using namespace lmtk::serve;

namespace {

// A transport whose only route is a WebSocket upgrade that echoes every text message with
// "re: " in front, on a channel with a small message limit.
class echo_server {
public:
    explicit echo_server(ws_options opt = {}) {
        opt_ = opt;
        t_ = std::make_unique<transport>(
            transport_options{}, routes_,
            [this](const http::request& req, boost::asio::ip::tcp::socket s) {
                ws_channel ch(std::move(s), req, opt_);
                while (auto m = ch.receive(&t_->stopping_flag())) {
                    if (m->text) ch.send_text("re: " + m->data);
                }
            },
            nullptr, [](int, const std::string& m) { return m; });
        port_ = t_->bind("127.0.0.1", 0);
        thread_ = std::thread([this] { t_->run(); });
    }
    ~echo_server() {
        t_->stop();
        thread_.join();
    }
    int port() const { return port_; }

private:
    ws_options opt_;
    http::router routes_;
    std::unique_ptr<transport> t_;
    int port_ = 0;
    std::thread thread_;
};

int connect_raw(int port) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<std::uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    return fd;
}

void send_all(int fd, const std::string& s) {
    for (std::size_t at = 0; at < s.size();) {
        const ssize_t n = ::send(fd, s.data() + at, s.size() - at, MSG_NOSIGNAL);
        REQUIRE(n > 0);
        at += std::size_t(n);
    }
}

// What arrives within `ms` of silence (or until the peer closes).
std::string read_for(int fd, int ms = 1500) {
    std::string out;
    for (;;) {
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, ms) <= 0) break;
        char buf[65536];
        const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n <= 0) break;
        out.append(buf, std::size_t(n));
    }
    return out;
}

// RFC 6455 section 1.3's example: this key must be answered with that accept value.
int handshake(int port) {
    const int fd = connect_raw(port);
    send_all(fd, "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
    std::string head;
    while (head.find("\r\n\r\n") == std::string::npos) {
        char c;
        REQUIRE(::recv(fd, &c, 1, 0) == 1);
        head += c;
    }
    REQUIRE(head.rfind("HTTP/1.1 101", 0) == 0);
    CHECK(head.find("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") != std::string::npos);
    return fd;
}

// One masked client frame: FIN/opcode byte, then the payload with the mask applied.
std::string client_frame(std::uint8_t first, std::string_view payload) {
    std::string f;
    f += static_cast<char>(first);
    const char mask[4] = {0x11, 0x22, 0x33, 0x44};
    if (payload.size() < 126) {
        f += static_cast<char>(0x80 | payload.size());
    } else {
        f += static_cast<char>(0x80 | 126);
        f += static_cast<char>(payload.size() >> 8);
        f += static_cast<char>(payload.size() & 0xff);
    }
    f.append(mask, 4);
    for (std::size_t i = 0; i < payload.size(); ++i) f += static_cast<char>(payload[i] ^ mask[i & 3]);
    return f;
}

// The unmasked server frame carrying `payload` as text.
std::string server_text_frame(std::string_view payload) {
    std::string f;
    f += static_cast<char>(0x81);
    f += static_cast<char>(payload.size());
    f.append(payload);
    return f;
}

}  // namespace

TEST_CASE("client and server ends exchange messages of every length class", "[serve][websocket]") {
    echo_server server;
    lmtk::client::ws_connection client("127.0.0.1", std::to_string(server.port()), "/", std::chrono::seconds(5));
    for (const std::size_t n : {std::size_t(0), std::size_t(125), std::size_t(126), std::size_t(65535), std::size_t(65536),
                                std::size_t(3) << 20}) {
        std::string msg(n, 'x');
        for (std::size_t i = 0; i < n; ++i) msg[i] = static_cast<char>('a' + i % 26);
        REQUIRE(client.send_text(msg));
        const auto back = client.receive(std::chrono::seconds(10));
        REQUIRE(back);
        CHECK(*back == "re: " + msg);
    }
    client.close();
    CHECK_FALSE(client.open());
}

TEST_CASE("fragments are joined, pings answered, a close echoed", "[serve][websocket]") {
    echo_server server;
    const int fd = handshake(server.port());
    // "Hello" in two fragments: text without FIN, then a continuation with FIN.
    send_all(fd, client_frame(0x01, "Hel") + client_frame(0x80, "lo"));
    CHECK(read_for(fd, 500) == server_text_frame("re: Hello"));
    // A ping is answered with a pong carrying the same payload.
    send_all(fd, client_frame(0x89, "p1"));
    CHECK(read_for(fd, 500) == std::string("\x8a\x02p1", 4));
    // A close (code 1000) is answered with a close and the end of the connection.
    send_all(fd, client_frame(0x88, std::string("\x03\xe8", 2)));
    const std::string tail = read_for(fd);
    REQUIRE(tail.size() >= 2);
    CHECK(static_cast<unsigned char>(tail[0]) == 0x88);
    ::close(fd);
}

TEST_CASE("a message over the limit and protocol violations close the connection with a reason", "[serve][websocket]") {
    echo_server server(ws_options{.max_message = 1024});
    auto close_code = [](const std::string& bytes) {
        // The server's close frame: 0x88, length, then the code in network order.
        REQUIRE(bytes.size() >= 4);
        CHECK(static_cast<unsigned char>(bytes[0]) == 0x88);
        return (static_cast<unsigned char>(bytes[2]) << 8) | static_cast<unsigned char>(bytes[3]);
    };
    {
        const int fd = handshake(server.port());
        send_all(fd, client_frame(0x81, std::string(2000, 'a')));  // over max_message
        CHECK(close_code(read_for(fd)) == 1009);
        ::close(fd);
    }
    {
        const int fd = handshake(server.port());
        send_all(fd, std::string("\x81\x02hi", 4));  // a client frame without a mask
        CHECK(close_code(read_for(fd)) == 1002);
        ::close(fd);
    }
    {
        const int fd = handshake(server.port());
        send_all(fd, client_frame(0x83, "x"));  // reserved opcode 3
        CHECK(close_code(read_for(fd)) == 1002);
        ::close(fd);
    }
    // The server still serves after all that.
    lmtk::client::ws_connection client("127.0.0.1", std::to_string(server.port()), "/", std::chrono::seconds(5));
    REQUIRE(client.send_text("still there"));
    CHECK(client.receive(std::chrono::seconds(5)) == std::optional<std::string>("re: still there"));
}

TEST_CASE("a silent server makes receive time out, a refused upgrade names the status", "[serve][websocket]") {
    echo_server server;
    lmtk::client::ws_connection client("127.0.0.1", std::to_string(server.port()), "/", std::chrono::seconds(5));
    CHECK_FALSE(client.receive(std::chrono::milliseconds(200)));
    CHECK(client.timed_out());

    // A plain HTTP server's 404 for the upgrade: the transport with no upgrade handler.
    http::router routes;
    transport plain(transport_options{}, routes, nullptr, nullptr, [](int, const std::string& m) { return m; });
    const int port = plain.bind("127.0.0.1", 0);
    std::thread t([&] { plain.run(); });
    CHECK_THROWS_WITH(lmtk::client::ws_connection("127.0.0.1", std::to_string(port), "/", std::chrono::seconds(5)),
                      Catch::Contains("refused the WebSocket upgrade") && Catch::Contains("404"));
    plain.stop();
    t.join();
}

#else
TEST_CASE("websocket needs lmtk::serve", "[serve][websocket]") { WARN("skipped: no lmtk::serve target"); }
#endif
