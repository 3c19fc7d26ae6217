// A loopback TCP forwarder that tests put between source and destination to
// break the link on purpose: cut() ends every forwarded connection at once
// (both peers see the connection closed without a close handshake), and
// while refusing() new connections are accepted and closed at once, so the
// source's redials fail until the link is "restored". throttle() caps each
// connection's rate, so a test can break the link before a migration that
// would otherwise finish first.
#pragma once

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <time.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace lm::engine::test {

class TcpProxy {
 public:
  // Forwards 127.0.0.1:port() to 127.0.0.1:target_port.
  explicit TcpProxy(uint16_t target_port) : target_port_(target_port) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(listen_fd_, 64) != 0) return;
    socklen_t len = sizeof a;
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    acceptor_ = std::thread([this] { accept_loop(); });
  }
  ~TcpProxy() {
    stop_ = true;
    if (acceptor_.joinable()) acceptor_.join();
    cut();
    ::close(listen_fd_);
  }
  TcpProxy(const TcpProxy&) = delete;
  TcpProxy& operator=(const TcpProxy&) = delete;

  uint16_t port() const { return port_; }  // 0: could not listen
  void refuse(bool on) { refusing_ = on; }
  // Each forwarded connection moves at most this many bytes per second each
  // way (0: unlimited).
  void throttle(uint64_t bytes_per_s) { bytes_per_s_ = bytes_per_s; }
  // Ends every live forwarded connection; returns how many there were.
  size_t cut() {
    std::vector<std::unique_ptr<Link>> links;
    {
      std::lock_guard g(lock_);
      links.swap(links_);
    }
    for (auto& l : links) {
      ::shutdown(l->a, SHUT_RDWR);
      ::shutdown(l->b, SHUT_RDWR);
    }
    for (auto& l : links) {
      l->pump.join();
      ::close(l->a);
      ::close(l->b);
    }
    return links.size();
  }
  uint64_t accepted() const { return accepted_; }

 private:
  struct Link {
    int a = -1, b = -1;
    std::thread pump;
  };

  void accept_loop() {
    while (!stop_) {
      pollfd p{listen_fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      int a = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (a < 0) continue;
      if (refusing_) {
        ::close(a);
        continue;
      }
      int b = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_in t{};
      t.sin_family = AF_INET;
      t.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      t.sin_port = htons(target_port_);
      if (::connect(b, reinterpret_cast<sockaddr*>(&t), sizeof t) != 0) {
        ::close(a);
        ::close(b);
        continue;
      }
      accepted_++;
      auto link = std::make_unique<Link>();
      link->a = a;
      link->b = b;
      link->pump = std::thread([this, a, b] { pump(a, b, bytes_per_s_); });
      std::lock_guard g(lock_);
      links_.push_back(std::move(link));
    }
  }

  // Copies both ways until either side ends or cut() shuts both down.
  static void pump(int a, int b, const std::atomic<uint64_t>& bytes_per_s) {
    std::vector<char> buf(256 << 10);
    pollfd p[2] = {{a, POLLIN, 0}, {b, POLLIN, 0}};
    for (;;) {
      if (::poll(p, 2, 1000) < 0) return;
      for (int i = 0; i < 2; i++) {
        if (!p[i].revents) continue;
        ssize_t n = ::read(p[i].fd, buf.data(), buf.size());
        if (n <= 0) {
          ::shutdown(a, SHUT_RDWR);
          ::shutdown(b, SHUT_RDWR);
          return;
        }
        for (ssize_t done = 0; done < n;) {
          ssize_t w = ::send(p[1 - i].fd, buf.data() + done, size_t(n - done), MSG_NOSIGNAL);
          if (w <= 0) {
            ::shutdown(a, SHUT_RDWR);
            ::shutdown(b, SHUT_RDWR);
            return;
          }
          done += w;
        }
        if (uint64_t rate = bytes_per_s) {
          uint64_t ns = uint64_t(n) * 1000000000ull / rate;
          timespec ts{time_t(ns / 1000000000ull), long(ns % 1000000000ull)};
          nanosleep(&ts, nullptr);
        }
      }
    }
  }

  uint16_t target_port_;
  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<bool> refusing_{false};
  std::atomic<uint64_t> accepted_{0};
  std::atomic<uint64_t> bytes_per_s_{0};
  std::mutex lock_;
  std::vector<std::unique_ptr<Link>> links_;
  std::thread acceptor_;
};

}  // namespace lm::engine::test
