#include <csignal>
#include <cstdio>
#include <iostream>

#include <caf/actor_system.hpp>

#include "actors/server.h"
#include "config/command_options.h"
#include "tools/ultraserve/commands.h"

namespace ultraserve {
namespace {

// Every limit of the server is an option bound straight to its field in ServerSettings, so
// the defaults live in one place (the structs). docs/configuration.md explains each.
struct ServeOptions : CommandOptions {
  ServerSettings s;
  std::string model;

  ServeOptions() : CommandOptions("ultraserve serve --model DIR [--host H] [--port P] [--config-file FILE] [limits...]") {
    options()
        .add(model, "model", "HF checkpoint directory")
        .add(s.net.host, "host", "address to listen on (127.0.0.1: this machine only)")
        .add(s.net.port, "port", "TCP port (0: any free port)")
        .add(s.threads, "threads", "CPU worker threads (0: one per core)")
        .add(s.net.io_threads, "io-threads", "network threads")
        .add(s.kv_memory_mb, "kv-memory-mb", "KV cache size in MiB (when --kv-blocks is 0)")
        .add(s.planner.kv_blocks, "kv-blocks", "KV cache size in blocks (0: from --kv-memory-mb)")
        .add(s.planner.kv_block_size, "kv-block-size", "token positions per KV block")
        .add(s.planner.max_batch, "max-batch", "sequences in one step")
        .add(s.planner.max_step_tokens, "max-step-tokens", "tokens in one step (decodes + prompt chunks)")
        .add(s.planner.max_queued, "max-queued", "requests waiting for admission before 'overloaded'")
        .add(s.net.max_connections, "max-connections", "open connections (more get HTTP 503)")
        .add(s.request.max_tokens, "max-tokens-limit", "largest max_tokens a request may ask for")
        .add(s.request.default_max_tokens, "default-max-tokens", "max_tokens when a request names none")
        .add(s.request.max_prompt_bytes, "max-prompt-bytes", "largest prompt (or chat messages) in bytes")
        .add(s.request.max_stop_strings, "max-stop-strings", "stop strings per request")
        .add(s.session.max_requests_per_connection, "max-requests-per-connection", "concurrent requests on one WebSocket")
        .add(s.session.request_timeout, "request-timeout", "deadline of a request from submission (e.g. 600s)")
        .add(s.session.context_length, "context-length", "prompt + max_tokens limit (0: the model's)")
        .add(s.net.max_ws_frame_bytes, "max-frame-bytes", "largest WebSocket message from a client")
        .add(s.net.max_http_body_bytes, "max-body-bytes", "largest HTTP request body")
        .add(s.net.ws_send_queue_bytes, "send-queue-bytes", "per-connection send queue bound")
        .add(s.net.ws_send_overflow_grace, "send-overflow-grace", "time over the bound before a slow client is closed")
        .add(s.net.write_stall_timeout, "write-stall-timeout", "a write taking longer closes the connection")
        .add(s.net.idle_timeout, "idle-timeout", "silence from a WebSocket client before it is closed")
        .add(s.net.http_request_timeout, "http-request-timeout", "time to receive an HTTP request");
  }

  // CAF checks types and the range of unsigned fields; these are the rules it cannot know.
  ServerSettings validated() const {
    auto require = [](bool ok, const std::string& what) {
      if (!ok) throw UsageError(what);
    };
    using std::chrono::steady_clock;
    require(!model.empty(), "--model is required");
    require(s.net.io_threads > 0, "--io-threads must be positive");
    require(s.kv_memory_mb > 0 || s.planner.kv_blocks > 0, "--kv-memory-mb or --kv-blocks must be positive");
    require(s.planner.kv_blocks >= 0, "--kv-blocks must be >= 0");
    require(s.planner.kv_block_size > 0, "--kv-block-size must be positive");
    require(s.planner.max_batch > 0, "--max-batch must be positive");
    require(s.planner.max_step_tokens >= s.planner.max_batch,
            "--max-step-tokens must be >= --max-batch (every running sequence decodes each step)");
    require(s.planner.max_queued > 0, "--max-queued must be positive");
    require(s.net.max_connections > 0, "--max-connections must be positive");
    require(s.request.max_tokens > 0, "--max-tokens-limit must be positive");
    require(s.request.default_max_tokens > 0 && s.request.default_max_tokens <= s.request.max_tokens,
            "--default-max-tokens must be in [1, --max-tokens-limit]");
    require(s.request.max_prompt_bytes > 0, "--max-prompt-bytes must be positive");
    require(s.session.max_requests_per_connection > 0, "--max-requests-per-connection must be positive");
    require(s.session.context_length >= 0, "--context-length must be >= 0");
    require(s.net.max_ws_frame_bytes > 0 && s.net.max_http_body_bytes > 0 && s.net.ws_send_queue_bytes > 0,
            "--max-frame-bytes, --max-body-bytes and --send-queue-bytes must be positive");
    for (auto [d, name] : {std::pair{s.session.request_timeout, "request-timeout"},
                           {s.net.ws_send_overflow_grace, "send-overflow-grace"},
                           {s.net.write_stall_timeout, "write-stall-timeout"}, {s.net.idle_timeout, "idle-timeout"},
                           {s.net.http_request_timeout, "http-request-timeout"}})
      require(d > steady_clock::duration::zero(), std::string("--") + name + " must be positive");
    ServerSettings out = s;
    out.model = model;
    return out;
  }
};

}  // namespace

int serve_command(const Args& args) {
  ServeOptions o;
  return run_command(o, args, [&] {
    ServerSettings settings = o.validated();
    // SIGINT/SIGTERM are taken by sigwait below, on this thread only: blocked before any
    // thread starts so that no other thread receives them.
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);

    caf::actor_system system{o};
    Server server(system, std::move(settings));
    const std::string& host = server.settings().net.host;
    std::printf("ultraserve: serving %s on http://%s:%u (WebSocket ws://%s:%u%s)\n", o.model.c_str(), host.c_str(),
                server.port(), host.c_str(), server.port(), server.settings().net.ws_path.c_str());
    std::fflush(stdout);
    int received = 0;
    sigwait(&signals, &received);
    std::fprintf(stderr, "ultraserve: %s, shutting down\n", received == SIGINT ? "SIGINT" : "SIGTERM");
    server.stop();
  });
}

}  // namespace ultraserve
