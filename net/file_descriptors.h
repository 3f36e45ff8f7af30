#pragma once
// Every connection is a file descriptor: a server allowed max-connections must be allowed that
// many descriptors too, or the accept that passes the process limit fails for everyone (and so
// does the next model file or log it opens). Checked once at start.

#include <cstddef>

namespace ultraserve {

// Descriptors kept for what is not a connection: the listener, model files, the admin
// console, logs, the actor system's own pipes.
constexpr std::size_t kReservedFileDescriptors = 256;

// Raises the soft RLIMIT_NOFILE to what `max_connections` needs (never above the hard limit).
// Throws std::runtime_error naming both numbers and the two ways out when the hard limit is
// too low.
void ensure_file_descriptors(std::size_t max_connections);

}  // namespace ultraserve
