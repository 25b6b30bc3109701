// Fuzzes the server's WebSocket end (include/lmtk/serve/ws_channel.hpp, Boost.Beast underneath)
// as an LMTP session uses it: after a valid opening handshake, the peer sends arbitrary bytes
// and then closes its side.
//
// The channel must hand over only whole messages within max_message (small here, so that the
// limit is reached), never block on the peer's garbage, and end when the bytes do: a receive
// still waiting 5 s after the peer's end would mean it waits for bytes that can never come.
// The I/O runs on one thread started once, like the transport's; each input gets a loopback
// TCP connection of its own.
#include <lmtk/serve/ws_channel.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>

namespace {

constexpr std::size_t max_message = 1024;

[[noreturn]] void violated(const char* what) {
    std::fprintf(stderr, "websocket_frames: %s\n", what);
    std::abort();
}

struct loopback {
    boost::asio::io_context ioc;
    boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work{ioc.get_executor()};
    boost::asio::ip::tcp::acceptor acceptor{ioc, {boost::asio::ip::address_v4::loopback(), 0}};
    std::thread io{[this] { ioc.run(); }};
};

loopback& net() {
    static loopback* l = new loopback;  // never destroyed: the fuzzer exits without unwinding
    return *l;
}

// The request a client sends to upgrade (RFC 6455's example key).
lmtk::serve::http::request upgrade_request() {
    lmtk::serve::http::request r;
    r.method = "GET";
    r.target = r.path = "/";
    r.headers = {{"Host", "127.0.0.1"},
                 {"Upgrade", "websocket"},
                 {"Connection", "Upgrade"},
                 {"Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="},
                 {"Sec-WebSocket-Version", "13"}};
    return r;
}

// Reads and drops what the server sent so far (the 101, pongs, a close) without waiting.
void drain(int fd) {
    char buf[65536];
    while (::recv(fd, buf, sizeof buf, MSG_DONTWAIT) > 0) {
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    auto& l = net();
    const int client = ::socket(AF_INET, SOCK_STREAM, 0);
    if (client < 0) std::abort();
    const int room = 4 << 20;  // the input goes in before the server reads: it must fit
    ::setsockopt(client, SOL_SOCKET, SO_SNDBUF, &room, sizeof room);
    // Each input from another source address in 127/8: the server's end can close first and
    // then holds (address, port) pairs in TIME_WAIT for a minute; from one address the 28,000
    // ephemeral ports would run out within the 15 s CI run (connect: EADDRNOTAVAIL).
    static std::uint32_t source = 0;
    sockaddr_in from{};
    from.sin_family = AF_INET;
    from.sin_addr.s_addr = htonl(0x7f000002u + (source++ % 0xfffff0u));
    if (::bind(client, reinterpret_cast<sockaddr*>(&from), sizeof from) != 0) {
        std::perror("websocket_frames: bind a loopback source address");
        std::abort();
    }
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(l.acceptor.local_endpoint().port());
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(client, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
        std::perror("websocket_frames: connect to the loopback listener");
        std::abort();
    }
    boost::asio::ip::tcp::socket server(l.ioc);
    l.acceptor.accept(server);
    server.set_option(boost::asio::socket_base::linger(true, 0));  // see the reset below
    {
        lmtk::serve::ws_channel ch(std::move(server), upgrade_request(),
                                   lmtk::serve::ws_options{.max_message = max_message, .send_timeout = std::chrono::seconds(2)});
        std::size_t sent = 0;
        while (sent < size) {
            const ssize_t n = ::send(client, data + sent, size - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n <= 0) break;  // a full buffer: fuzz with what fits (-max_len keeps inputs small)
            sent += std::size_t(n);
        }
        ::shutdown(client, SHUT_WR);
        // The watchdog wakes as soon as receiving ends (a condition variable, not a sleep): a
        // fixed pause per input would hold the harness to a few dozen inputs a second.
        std::mutex mu;
        std::condition_variable cv;
        bool finished = false;
        std::thread watchdog([&] {
            const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
            std::unique_lock lock(mu);
            while (!finished) {
                drain(client);  // answers must not pile up and stall the server's writes
                if (std::chrono::steady_clock::now() >= deadline) violated("receive waited for bytes after the end of the stream");
                cv.wait_for(lock, std::chrono::milliseconds(10));
            }
        });
        for (int i = 0; i < 100000; ++i) {
            auto m = ch.receive();
            if (!m) break;
            if (m->data.size() > max_message) violated("a message beyond max_message was returned");
        }
        {
            std::lock_guard lock(mu);
            finished = true;
        }
        cv.notify_one();
        watchdog.join();
        // Reset, not close: an orderly close leaves one side in TIME_WAIT for a minute, and at
        // a thousand inputs a second the loopback's ephemeral ports (28,000) run out within
        // the 15 s CI run (connect fails with EADDRNOTAVAIL). The server's end, which may close first
        // (on a protocol error), resets too.
        const linger reset{1, 0};
        ::setsockopt(client, SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
        ::close(client);
    }
    return 0;
}
