#include "net/file_descriptors.h"

#include <sys/resource.h>

#include <stdexcept>
#include <string>

namespace ultraserve {

void ensure_file_descriptors(std::size_t max_connections) {
  const rlim_t needed = static_cast<rlim_t>(max_connections) + kReservedFileDescriptors;
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return;  // nothing to check against
  if (limit.rlim_cur == RLIM_INFINITY || limit.rlim_cur >= needed) return;
  if (limit.rlim_max != RLIM_INFINITY && limit.rlim_max < needed)
    throw std::runtime_error("max-connections " + std::to_string(max_connections) + " needs " +
                             std::to_string(needed) + " file descriptors, but this process may open at most " +
                             std::to_string(limit.rlim_max) + ": raise the limit (ulimit -n, LimitNOFILE=) or " +
                             "lower --max-connections to " +
                             std::to_string(limit.rlim_max > kReservedFileDescriptors
                                                ? limit.rlim_max - kReservedFileDescriptors
                                                : 0));
  limit.rlim_cur = needed;
  if (setrlimit(RLIMIT_NOFILE, &limit) != 0)
    throw std::runtime_error("could not raise the open-file limit to " + std::to_string(needed) +
                             " for max-connections " + std::to_string(max_connections));
}

}  // namespace ultraserve
