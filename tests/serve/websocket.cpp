#include <catch2/catch.hpp>

#include <lmtk/serve/websocket.hpp>

#include <sys/socket.h>

#include <string>
#include <thread>

using namespace lmtk::serve;

// Known answers: FIPS 180's SHA-1 examples and RFC 6455's handshake example (section 1.3).
TEST_CASE("handshake digests match the published examples", "[serve][websocket]") {
    auto hex = [](const auto& d) {
        std::string s;
        char b[3];
        for (auto x : d) std::snprintf(b, sizeof b, "%02x", unsigned(x)), s += b;
        return s;
    };
    CHECK(hex(ws::sha1("abc")) == "a9993e364706816aba3e25717850c26c9cd0d89d");
    CHECK(hex(ws::sha1("")) == "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    CHECK(hex(ws::sha1("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")) ==
          "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
    CHECK(hex(ws::sha1(std::string(1000000, 'a'))) == "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
    CHECK(ws::accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    const std::uint8_t foob[] = {'f', 'o', 'o', 'b'};
    CHECK(ws::base64(std::span(foob, 4)) == "Zm9vYg==");
    CHECK(ws::base64(std::span(foob, 3)) == "Zm9v");
}

namespace {
struct socket_pair {
    int fd[2] = {-1, -1};
    socket_pair() { REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM, 0, fd) == 0); }
};

// Raw bytes of one masked client frame, written by hand (not by the code under test).
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
}  // namespace

TEST_CASE("client and server ends exchange messages of every length class", "[serve][websocket]") {
    socket_pair p;
    ws::connection server(p.fd[0], ws::role::server), client(p.fd[1], ws::role::client);
    for (const std::size_t n : {std::size_t(0), std::size_t(125), std::size_t(126), std::size_t(65535), std::size_t(65536),
                                std::size_t(3) << 20}) {
        std::string msg(n, 'x');
        for (std::size_t i = 0; i < n; ++i) msg[i] = static_cast<char>('a' + i % 26);
        std::thread t([&] { REQUIRE(client.send_text(msg)); });
        auto got = server.receive();
        t.join();
        REQUIRE(got);
        CHECK(got->type == ws::opcode::text);
        CHECK(got->data == msg);
        std::thread u([&] { REQUIRE(server.send_text("re: " + msg)); });
        auto back = client.receive();
        u.join();
        REQUIRE(back);
        CHECK(back->data == "re: " + msg);
    }
}

TEST_CASE("fragments are joined, pings answered, a close echoed", "[serve][websocket]") {
    socket_pair p;
    ws::connection server(p.fd[0], ws::role::server);
    const std::string bytes = client_frame(0x01, "GENERATE ") + client_frame(0x89, "hi") +  // text, not fin; ping
                              client_frame(0x80, "{}") + client_frame(0x88, "\x03\xe8");    // last fragment; close 1000
    REQUIRE(::send(p.fd[1], bytes.data(), bytes.size(), 0) == static_cast<ssize_t>(bytes.size()));
    auto m = server.receive();
    REQUIRE(m);
    CHECK(m->data == "GENERATE {}");
    CHECK_FALSE(server.receive());  // the close
    CHECK_FALSE(server.open());
    char buf[64];
    const ssize_t n = ::recv(p.fd[1], buf, sizeof buf, 0);
    // The pong (unmasked, "hi") then the close echo with the same code.
    REQUIRE(n == 4 + 4);
    CHECK(std::string(buf, 4) == std::string("\x8a\x02hi", 4));
    CHECK(std::string(buf + 4, 4) == std::string("\x88\x02\x03\xe8", 4));
    ::close(p.fd[1]);
}

TEST_CASE("protocol violations close the connection with a reason instead of crashing", "[serve][websocket]") {
    SECTION("an unmasked client frame") {
        socket_pair p;
        ws::connection server(p.fd[0], ws::role::server);
        const std::string f = "\x81\x02hi";
        ::send(p.fd[1], f.data(), f.size(), 0);
        CHECK_FALSE(server.receive());
        char buf[64];
        const ssize_t n = ::recv(p.fd[1], buf, sizeof buf, 0);
        REQUIRE(n >= 4);
        CHECK(static_cast<unsigned char>(buf[0]) == 0x88);
        CHECK((static_cast<unsigned char>(buf[2]) << 8 | static_cast<unsigned char>(buf[3])) == 1002);
        ::close(p.fd[1]);
    }
    SECTION("a message over the size limit") {
        socket_pair p;
        ws::connection server(p.fd[0], ws::role::server, /*max_message=*/100);
        const std::string f = client_frame(0x81, std::string(200, 'x'));
        ::send(p.fd[1], f.data(), f.size(), 0);
        CHECK_FALSE(server.receive());
        ::close(p.fd[1]);
    }
    SECTION("a peer that hangs up mid-frame") {
        socket_pair p;
        ws::connection server(p.fd[0], ws::role::server);
        const std::string f = client_frame(0x81, "GENERATE {}").substr(0, 7);
        ::send(p.fd[1], f.data(), f.size(), 0);
        ::close(p.fd[1]);
        CHECK_FALSE(server.receive());
    }
    SECTION("a stop flag ends a wait for a silent peer") {
        socket_pair p;
        ws::connection server(p.fd[0], ws::role::server);
        std::atomic<bool> stop{false};
        std::thread t([&] {
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
            stop = true;
        });
        CHECK_FALSE(server.receive(&stop));
        t.join();
        ::close(p.fd[1]);
    }
}
