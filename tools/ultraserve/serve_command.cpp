#include <cstdio>
#include <iostream>
#include <thread>

#include <caf/actor_system.hpp>

#include "actors/admin_endpoint.h"
#include "actors/server.h"
#include "actors/settings_table.h"
#include "config/admin_token.h"
#include "config/command_options.h"
#include "model/checkpoint.h"
#include "tools/ultraserve/admin_shell.h"
#include "tools/ultraserve/commands.h"
#include "tools/ultraserve/stop_signal.h"

namespace ultraserve {
namespace {

// Every limit of the server is an option bound straight to its field in ServerSettings, so
// the defaults live in one place (the structs). docs/configuration.md explains each.
struct ServeOptions : CommandOptions {
  ServerSettings s;
  std::string model = default_model_dir(), draft;
  AdminSettings admin;
  bool no_admin = false;
  bool shell = false;

  ServeOptions() : CommandOptions("ultraserve serve --model DIR [--host H] [--port P] [--config-file FILE] [limits...]") {
    options()
        .add(model, "model", "HF checkpoint directory (default: the shipped models/default)")
        .add(draft, "draft", "a DFlash draft: speculative decoding, lossless (default: DIR/draft if it exists)")
        .add(s.no_draft, "no-draft", "serve without the draft even when one is configured")
        .add(s.planner.block_size, "block-size", "speculative block, anchor included (0: the draft's; live)")
        .add(s.planner.adaptive_block, "adaptive-block-size", "choose each round's block (up to block-size) from measured costs")
        .add(s.net.host, "host", "address to listen on (127.0.0.1: this machine only)")
        .add(s.net.port, "port", "TCP port (0: any free port)")
        .add(s.devices.device, "device", "auto (a GPU if there is one), cpu, cuda or cuda:N")
        .add(s.devices.gpu_experts, "gpu-experts", "routed experts on the GPU: mxfp4 or bf16")
        .add(s.devices.gpu_memory_fraction, "gpu-memory-fraction", "of the GPU memory the weights leave, for KV")
        .add(s.devices.gpu_fp8_tensor_cores, "gpu-fp8-tensor-cores",
             "FP8 checkpoints: passes of several rows on FP8 tensor cores (activations in FP8 too)")
        .add(s.threads, "threads", "CPU worker threads (0: one per core)")
        .add(s.net.io_threads, "io-threads", "network threads")
        .add(s.kv_memory_mb, "kv-memory-mb", "CPU KV cache size in MiB (when --kv-blocks is 0)")
        .add(s.planner.kv_blocks, "kv-blocks", "KV cache size in blocks (0: from --kv-memory-mb or GPU memory)")
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
        .add(s.shutdown_grace, "shutdown-grace", "on SIGTERM/SIGINT: time in-flight requests get to finish")
        .add(s.session.context_length, "context-length", "prompt + max_tokens limit (0: the model's)")
        .add(s.net.max_ws_frame_bytes, "max-frame-bytes", "largest WebSocket message from a client")
        .add(s.net.max_http_body_bytes, "max-body-bytes", "largest HTTP request body")
        .add(s.net.ws_send_queue_bytes, "send-queue-bytes", "per-connection send queue bound")
        .add(s.net.ws_send_overflow_grace, "send-overflow-grace", "time over the bound before a slow client is closed")
        .add(s.net.write_stall_timeout, "write-stall-timeout", "a write taking longer closes the connection")
        .add(s.net.idle_timeout, "idle-timeout", "silence from a WebSocket client before it is closed")
        .add(s.net.http_request_timeout, "http-request-timeout", "time to receive an HTTP request")
        .add(shell, "shell", "run the admin shell on this terminal (quit or Ctrl-D stops the server)")
        .add(no_admin, "no-admin", "do not publish the admin console")
        .add(admin.host, "admin-host", "admin console address (non-loopback needs the --admin-tls-* files)")
        .add(admin.port, "admin-port", "admin console TCP port (0: any free port)")
        .add(admin.token_file, "admin-token-file", "admin token, made at first start (default: per user)")
        .add(admin.tls.certificate, "admin-tls-certificate", "PEM certificate the admin console presents")
        .add(admin.tls.key, "admin-tls-key", "PEM private key of --admin-tls-certificate")
        .add(admin.tls.ca, "admin-tls-ca", "PEM CA that must have signed each admin client's certificate");
  }

  // CAF checks types and the range of unsigned fields; these are the rules it cannot know.
  ServerSettings validated() const {
    auto require = [](bool ok, const std::string& what) {
      if (!ok) throw UsageError(what);
    };
    require(!model.empty(), "--model is required (models/default, the shipped default, is missing)");
    require(s.devices.gpu_experts == "mxfp4" || s.devices.gpu_experts == "bf16", "--gpu-experts must be mxfp4 or bf16");
    require(s.devices.gpu_memory_fraction > 0 && s.devices.gpu_memory_fraction <= 1,
            "--gpu-memory-fraction must be in (0, 1]");
    try {
      parse_device(s.devices.device);  // spelling only: no CUDA call before the signals are blocked
    } catch (const std::invalid_argument& e) {
      throw UsageError(e.what());
    }
    // The limits' rules are shared with the admin console's `set` (actors/settings_table.h).
    ServerSettings checked = s;
    checked.draft = draft_dir();
    const std::string limits_problem = check_settings(checked, "--");
    require(limits_problem.empty(), limits_problem);
    const std::string admin_problem = check_admin_settings(admin_settings());
    require(admin_problem.empty(), admin_problem);
    ServerSettings out = s;
    out.model = model;
    out.draft = draft_dir();
    return out;
  }

  // The named draft, else the model's bundled one; none with --no-draft.
  std::filesystem::path draft_dir() const { return choose_draft(model, draft, s.no_draft).value_or(""); }

  AdminSettings admin_settings() const {
    AdminSettings a = admin;
    a.publish = !no_admin;
    return a;
  }
};

// The admin token: the file's (made at first start) when the console is published; a fresh
// one in memory when only `--shell` talks to the admin actor.
std::string admin_token(const AdminSettings& admin) {
  if (!admin.publish) return make_admin_token();
  return load_or_create_admin_token(admin.token_file.empty() ? default_admin_token_path()
                                                             : std::filesystem::path(admin.token_file));
}

// After a drain the WebSocket sessions close their connections once their last events are
// written; stopping the server before that would cut those events off. Waits for the
// connections to go, but no longer than `limit` (an idle HTTP keep-alive client may linger).
void wait_for_connections_to_close(const Server& server, std::chrono::seconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (server.open_connections() > 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
}

// `--shell`: the admin shell on this terminal, talking to the admin actor in this process.
// Leaving it stops the server; a stop from elsewhere (a signal, a drain) ends it.
std::thread start_shell(caf::actor_system& system, const AdminEndpoint& admin, StopSignal& stop) {
  return std::thread([&system, &admin, &stop] {
    AdminClient local(system, "this server", [&admin]() -> caf::expected<caf::actor> { return admin.actor(); },
                      admin.token(), std::chrono::seconds(30));
    run_admin_shell(local, {false, stop.wake_fd()});
    stop.request("the shell closed");
  });
}

}  // namespace

int serve_command(const Args& args) {
  ServeOptions o;
  return run_command(o, args, [&] {
    ServerSettings settings = o.validated();
    const AdminSettings admin_settings = o.admin_settings();
    const std::string token = admin_token(admin_settings);
    StopSignal stop;
    SignalWatcher signals(stop);  // before the actor system starts its threads
    if (admin_settings.publish) configure_admin_transport(o, admin_settings.tls);

    caf::actor_system system{o};
    Server server(system, std::move(settings));
    AdminEndpoint admin(system, server, admin_settings, token, [&stop] { stop.request("drained"); });
    const std::string& host = server.settings().net.host;
    std::printf("ultraserve: serving %s on http://%s:%u (WebSocket ws://%s:%u%s)\n", o.model.c_str(), host.c_str(),
                server.port(), host.c_str(), server.port(), server.settings().net.ws_path.c_str());
    if (admin.port() != 0)
      std::printf("ultraserve: admin console on %s:%u (ultraserve admin --connect %s:%u)\n",
                  admin_settings.host.c_str(), admin.port(), admin_settings.host.c_str(), admin.port());
    std::fflush(stdout);
    std::thread shell = o.shell ? start_shell(system, admin, stop) : std::thread();
    const std::string reason = stop.wait();
    std::fprintf(stderr, "ultraserve: %s, shutting down\n", reason.c_str());
    if (shell.joinable()) shell.join();
    bool drained = reason == "drained";
    if (reason == "SIGTERM" || reason == "SIGINT") {
      // Graceful: refuse new requests, let those in flight finish within the grace period.
      const double grace_s = std::chrono::duration<double>(server.settings().shutdown_grace).count();
      std::fprintf(stderr, "ultraserve: draining: new requests are refused; requests in flight have %.0f s to finish "
                   "(a second signal stops at once)\n", grace_s);
      drained = server.drain(server.settings().shutdown_grace);
      std::fprintf(stderr, drained ? "ultraserve: drained\n"
                                   : "ultraserve: the grace period ended with requests in flight: they are cut off\n");
    }
    if (drained) wait_for_connections_to_close(server, std::chrono::seconds(5));
    server.stop();
  });
}

}  // namespace ultraserve
