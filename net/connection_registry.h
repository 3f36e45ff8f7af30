#pragma once
// Every open socket the server owns, so that max_connections can be enforced, the count
// reported to the backend, and stop() can reach each connection to close it.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <unordered_map>

namespace ultraserve {

// Something with a socket that HttpServer::stop() must close. shutdown() is thread-safe:
// implementations post onto their strand.
class Closable {
 public:
  virtual ~Closable() = default;
  virtual void shutdown() = 0;
};

class ConnectionRegistry;

// A connection's place in the registry; releasing it (or destroying it) removes the entry.
// Move-only: an HTTP connection hands its slot to the WebSocket connection it upgrades to,
// so the TCP connection is counted once throughout.
class ConnectionSlot {
 public:
  ConnectionSlot() = default;
  ConnectionSlot(ConnectionSlot&& other) noexcept;
  ConnectionSlot& operator=(ConnectionSlot&& other) noexcept;
  ConnectionSlot(const ConnectionSlot&) = delete;
  ConnectionSlot& operator=(const ConnectionSlot&) = delete;
  ~ConnectionSlot() { release(); }

  explicit operator bool() const { return registry_ != nullptr; }
  // Points the entry at its (new) owner. When the registry is already shutting down, the
  // owner is shut down at once.
  void attach(std::weak_ptr<Closable> owner);
  void release();

 private:
  friend class ConnectionRegistry;
  ConnectionSlot(ConnectionRegistry* registry, uint64_t id) : registry_(registry), id_(id) {}
  ConnectionRegistry* registry_ = nullptr;
  uint64_t id_ = 0;
};

class ConnectionRegistry {
 public:
  // `on_count` hears the number of counted connections after every change. It is called with
  // the registry's lock held (so that counts arrive in order): it must not call back in.
  ConnectionRegistry(std::size_t max_connections, std::function<void(int)> on_count);

  // A slot for a client connection, or an empty slot when max_connections are open or the
  // registry is shutting down.
  ConnectionSlot admit();
  // A slot that does not count toward the limit (a socket being turned away with 503);
  // empty when shutting down.
  ConnectionSlot admit_uncounted();

  // Refuses new slots and shuts down every registered connection.
  void shutdown_all();

  int open_connections() const;

 private:
  friend class ConnectionSlot;
  struct Entry {
    std::weak_ptr<Closable> owner;
    bool counted = false;
  };
  ConnectionSlot add(bool counted);
  void attach(uint64_t id, std::weak_ptr<Closable> owner);
  void remove(uint64_t id);
  void report_locked();

  const std::size_t max_connections_;
  const std::function<void(int)> on_count_;
  mutable std::mutex mutex_;
  std::unordered_map<uint64_t, Entry> entries_;
  uint64_t next_id_ = 1;
  int counted_ = 0;
  bool shutting_down_ = false;
};

}  // namespace ultraserve
