#include "net/connection_registry.h"

#include <exception>
#include <string>
#include <utility>
#include <vector>

#include "net/net_log.h"

namespace ultraserve {

ConnectionSlot::ConnectionSlot(ConnectionSlot&& other) noexcept
    : registry_(std::exchange(other.registry_, nullptr)), id_(other.id_) {}

ConnectionSlot& ConnectionSlot::operator=(ConnectionSlot&& other) noexcept {
  if (this != &other) {
    release();
    registry_ = std::exchange(other.registry_, nullptr);
    id_ = other.id_;
  }
  return *this;
}

void ConnectionSlot::attach(std::weak_ptr<Closable> owner) {
  if (registry_) registry_->attach(id_, std::move(owner));
}

void ConnectionSlot::release() {
  if (auto* registry = std::exchange(registry_, nullptr)) registry->remove(id_);
}

ConnectionRegistry::ConnectionRegistry(std::size_t max_connections, std::function<void(int)> on_count)
    : max_connections_(max_connections), on_count_(std::move(on_count)) {}

ConnectionSlot ConnectionRegistry::admit() { return add(true); }

ConnectionSlot ConnectionRegistry::admit_uncounted() { return add(false); }

ConnectionSlot ConnectionRegistry::add(bool counted) {
  std::lock_guard lock(mutex_);
  if (shutting_down_) return {};
  if (counted && static_cast<std::size_t>(counted_) >= max_connections_) return {};
  const uint64_t id = next_id_++;
  entries_.emplace(id, Entry{{}, counted});
  if (counted) {
    ++counted_;
    report_locked();
  }
  return ConnectionSlot(this, id);
}

void ConnectionRegistry::attach(uint64_t id, std::weak_ptr<Closable> owner) {
  std::shared_ptr<Closable> late;
  {
    std::lock_guard lock(mutex_);
    auto it = entries_.find(id);
    if (it == entries_.end()) return;
    it->second.owner = owner;
    if (shutting_down_) late = owner.lock();
  }
  // Registered after shutdown_all() took its snapshot: nobody else will close it.
  if (late) late->shutdown();
}

void ConnectionRegistry::remove(uint64_t id) {
  std::lock_guard lock(mutex_);
  auto it = entries_.find(id);
  if (it == entries_.end()) return;
  const bool counted = it->second.counted;
  entries_.erase(it);
  if (counted) {
    --counted_;
    report_locked();
  }
}

void ConnectionRegistry::shutdown_all() {
  std::vector<std::shared_ptr<Closable>> open;
  {
    std::lock_guard lock(mutex_);
    shutting_down_ = true;
    for (auto& [id, entry] : entries_)
      if (auto owner = entry.owner.lock()) open.push_back(std::move(owner));
  }
  for (auto& connection : open) connection->shutdown();
}

int ConnectionRegistry::open_connections() const {
  std::lock_guard lock(mutex_);
  return counted_;
}

void ConnectionRegistry::report_locked() {
  if (!on_count_) return;
  try {
    on_count_(counted_);
  } catch (const std::exception& e) {
    log_net(std::string("on_connection_count threw: ") + e.what());
  } catch (...) {
    log_net("on_connection_count threw");
  }
}

}  // namespace ultraserve
