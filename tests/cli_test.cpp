// The ultraserve binary as a user meets it: exit codes, messages, and both option spellings.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <csignal>
#include <cstdio>
#include <functional>

#include <simdjson.h>

#include "tests/child_process.h"
#include "tests/test_support.h"

namespace ultraserve {
namespace {

struct CliRun {
  int exit_code;
  std::string output;  // stdout and stderr together
};

CliRun ultraserve(const std::string& args) {
  const std::string cmd = (testing::binary_dir() / "tools/ultraserve").string() + " " + args + " 2>&1";
  FILE* pipe = popen(cmd.c_str(), "r");
  std::string out;
  std::array<char, 4096> buf;
  while (size_t n = fread(buf.data(), 1, buf.size(), pipe)) out.append(buf.data(), n);
  int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

#define EXPECT_RUN(run, code, needle)                                            \
  do {                                                                           \
    CliRun r_ = (run);                                                              \
    EXPECT_EQ(r_.exit_code, code) << r_.output;                                  \
    EXPECT_NE(r_.output.find(needle), std::string::npos) << r_.output;           \
  } while (0)

TEST(Cli, UsageErrorsExitWithTwoAndSayWhy) {
  EXPECT_RUN(ultraserve(""), 2, "usage: ultraserve <command>");
  EXPECT_RUN(ultraserve("frobnicate"), 2, "unknown command 'frobnicate'");
  EXPECT_RUN(ultraserve("generate --bogus=1"), 2, "unknown option");
  EXPECT_RUN(ultraserve("generate --model= --prompt hi"), 2, "--model");  // an empty one, not the shipped one
  EXPECT_RUN(ultraserve("generate --model x --prompt hi --max-tokens abc"), 2, "max-tokens");
  EXPECT_RUN(ultraserve("generate --model x --prompt hi --max-tokens"), 2, "max-tokens");
  EXPECT_RUN(ultraserve("generate --model x --prompt hi --temperature -1"), 2, "--temperature must be >= 0");
  EXPECT_RUN(ultraserve("generate --model x --prompt hi --top-p 0"), 2, "--top-p");
  EXPECT_RUN(ultraserve("generate --model x --prompt hi stray"), 2, "unexpected argument 'stray'");
  EXPECT_RUN(ultraserve("make-checkpoint --config a.json --out o --dtype q4"), 2, "--dtype must be");
  EXPECT_RUN(ultraserve("make-checkpoint --config a.json --out o --experts q4"), 2,
             "--experts must be bf16, f16, f32, fp8 or mxfp4");
  EXPECT_RUN(ultraserve("quantize --out o"), 2, "--model is required");
  EXPECT_RUN(ultraserve("quantize --model m"), 2, "--out is required");
  EXPECT_RUN(ultraserve("generate --help"), 0, "--max-tokens");
  EXPECT_RUN(ultraserve("help"), 0, "make-checkpoint");
}

TEST(Cli, RuntimeErrorsExitWithOneAndNameTheFile) {
  EXPECT_RUN(ultraserve("generate --model /nonexistent/model --prompt hi"), 1, "/nonexistent/model");
  EXPECT_RUN(ultraserve("make-checkpoint --config /nonexistent.json --out /tmp/x"), 1, "/nonexistent.json");
}

TEST(Cli, BrokenModelDirectoriesExitWithOneAndNameTheFile) {
  // What a user meets with a damaged checkpoint: exit 1 and an error naming the damaged file
  // and the problem (checkpoint_test and safetensors_test cover each message in detail).
  namespace fs = std::filesystem;
  struct Case {
    const char* what;
    const char* file;     // the damaged file, which the message must name
    const char* problem;  // what the message must say about it
    std::function<void(const fs::path& model)> damage;
  };
  const std::vector<Case> cases{
      {"missing config.json", "config.json", "cannot open", [](const fs::path& m) { fs::remove(m / "config.json"); }},
      {"malformed config.json", "config.json", "malformed JSON",
       [](const fs::path& m) { testing::write_file(m / "config.json", R"({"model_type": )"); }},
      {"truncated safetensors header", "model.safetensors", "truncated",
       [](const fs::path& m) {
         testing::write_file(m / "model.safetensors", testing::read_file(m / "model.safetensors").substr(0, 20));
       }},
      {"unknown dtype", "model.safetensors", "unsupported dtype 'BF17'",
       [](const fs::path& m) {
         // Same length, so the header's size and every offset stay right: only the dtype is wrong.
         std::string weights = testing::read_file(m / "model.safetensors");
         weights.replace(weights.find(R"("BF16")"), 6, R"("BF17")");
         testing::write_file(m / "model.safetensors", weights);
       }},
      {"tokenizer.json of another type", "tokenizer.json", "another type",
       [](const fs::path& m) {
         testing::write_file(m / "tokenizer.json", R"({"model":{"type":"WordPiece","vocab":{"a":0}}})");
       }},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    testing::ScratchDir dir;
    const fs::path model = testing::make_checkpoint(dir, "dense_qwen3.json");
    c.damage(model);
    CliRun r = ultraserve("generate --model " + model.string() + " --prompt hi --max-tokens 1");
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_NE(r.output.find((model / c.file).string()), std::string::npos) << r.output;
    EXPECT_NE(r.output.find(c.problem), std::string::npos) << r.output;
  }
}

TEST(Cli, MakeCheckpointThenGenerateWithBothOptionSpellings) {
  testing::ScratchDir dir;
  const std::string model = (dir / "m").string();
  const std::string config = testing::fixture("configs/dense_qwen3.json").string();
  EXPECT_RUN(ultraserve("make-checkpoint --config " + config + " --out " + model + " --seed 3"), 0, "wrote");
  CliRun spaced = ultraserve("generate --model " + model + " --prompt 'Hello' --max-tokens 12");
  CliRun joined = ultraserve("generate --model=" + model + " --prompt=Hello --max-tokens=12");
  EXPECT_EQ(spaced.exit_code, 0) << spaced.output;
  EXPECT_NE(spaced.output.find("tokens/s"), std::string::npos) << spaced.output;
  // The stats line differs in timings; the generated text before it must not.
  auto text = [](const std::string& s) { return s.substr(0, s.find("\n[")); };
  EXPECT_EQ(text(spaced.output), text(joined.output));
  CliRun sampled = ultraserve("generate --model " + model + " --prompt Hi --max-tokens 8 --temperature 0.8 --seed 5 --chat");
  EXPECT_EQ(sampled.exit_code, 0) << sampled.output;
}

TEST(Cli, QuantizeThenGenerate) {
  testing::ScratchDir dir;
  const std::string model = (dir / "m").string(), quantized = (dir / "q").string();
  const std::string config = testing::fixture("configs/moe_topk2_norm.json").string();
  ASSERT_EQ(ultraserve("make-checkpoint --config " + config + " --out " + model).exit_code, 0);
  CliRun q = ultraserve("quantize --model " + model + " --out " + quantized);
  EXPECT_EQ(q.exit_code, 0) << q.output;
  // Not a terminal here: plain progress lines, then the per-layer error table.
  for (const char* needle : {"quantize: 100%", "rel. RMS error", "max abs error", "\n2 ", "overall", "copied config.json"})
    EXPECT_NE(q.output.find(needle), std::string::npos) << needle << " in " << q.output;
  EXPECT_RUN(ultraserve("generate --model " + quantized + " --prompt Hello --max-tokens 8"), 0, "tokens/s");

  EXPECT_RUN(ultraserve("quantize --model " + model + " --out " + quantized), 1, "pass --force");
  EXPECT_RUN(ultraserve("quantize --model " + model + " --out " + quantized + " --force"), 0, "overall");
  EXPECT_RUN(ultraserve("quantize --model " + quantized + " --out " + (dir / "again").string()), 1, "already MXFP4");
  EXPECT_RUN(ultraserve("quantize --model /nonexistent/model --out " + (dir / "x").string()), 1, "/nonexistent/model");

  const std::string mx = (dir / "mx").string();
  EXPECT_RUN(ultraserve("make-checkpoint --config " + config + " --out " + mx + " --experts mxfp4"), 0, "wrote");
  EXPECT_EQ(testing::read_file(dir / "mx/model.safetensors"), testing::read_file(dir / "q/model.safetensors"));
  EXPECT_RUN(ultraserve("make-checkpoint --config " + testing::fixture("configs/dense_qwen3.json").string() +
                        " --out " + (dir / "d").string() + " --experts mxfp4"),
             1, "no routed experts");
}

TEST(Cli, ServeRefusesBadSettingsAtStartUp) {
  testing::ScratchDir dir;
  const std::string model = (dir / "m").string();
  ASSERT_EQ(ultraserve("make-checkpoint --config " + testing::fixture("configs/dense_qwen3.json").string() +
                       " --out " + model).exit_code, 0);
  testing::write_file(dir / "typo.conf", "port = \"eighty\"\n");
  EXPECT_RUN(ultraserve("serve --model " + model + " --config-file " + (dir / "typo.conf").string()), 2,
             "'port' must be");
  testing::write_file(dir / "unknown.conf", "prot = 80\n");
  EXPECT_RUN(ultraserve("serve --model " + model + " --config-file " + (dir / "unknown.conf").string()), 2,
             "unknown option 'prot'");
  EXPECT_RUN(ultraserve("serve --model " + model + " --config-file " + (dir / "absent.conf").string()), 2, "absent.conf");
  EXPECT_RUN(ultraserve("serve --model " + model + " --max-batch 0"), 2, "--max-batch must be positive");
  EXPECT_RUN(ultraserve("serve --model " + model + " --max-batch 100 --max-step-tokens 10"), 2, "--max-step-tokens");
  EXPECT_RUN(ultraserve("serve --model " + model + " --port 70000"), 2, "port");
  EXPECT_RUN(ultraserve("serve --model " + model + " --idle-timeout 5"), 2, "idle-timeout");
  EXPECT_RUN(ultraserve("serve --model /nonexistent/model"), 1, "/nonexistent/model");
  // A busy port: hold one with a listening socket, then ask the server for it.
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(listen(fd, 1), 0);
  socklen_t len = sizeof addr;
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  EXPECT_RUN(ultraserve("serve --model " + model + " --port " + std::to_string(ntohs(addr.sin_port))), 1,
             std::to_string(ntohs(addr.sin_port)));
  close(fd);
  // More connections than this process may have file descriptors (the children inherit its limit).
  rlimit files{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &files), 0);
  if (files.rlim_max != RLIM_INFINITY)
    EXPECT_RUN(ultraserve("serve --model " + model + " --port 0 --no-admin --max-connections " +
                          std::to_string(files.rlim_max)),
               1, "file descriptors");
}

TEST(Cli, ServeStartsWithTheShippedConfigFile) {
  // config/ultraserve.conf is documented as the list of every key with its default: every key
  // in it must still exist and have the right type, or start-up stops. The command line only
  // moves the ports out of the way (and keeps the KV cache small); it wins over the file.
  testing::ScratchDir dir;
  const std::string model = testing::make_checkpoint(dir, "dense_qwen3.json").string();
  testing::ChildProcess serve(
      {(testing::binary_dir() / "tools/ultraserve").string(), "serve", "--config-file",
       (testing::source_dir() / "config/ultraserve.conf").string(), "--model", model, "--port", "0", "--no-admin",
       "--kv-memory-mb", "16"},
      {"HOME=" + dir.path().string(), "XDG_CONFIG_HOME=" + (dir / "config").string()});
  serve.read_until("ultraserve: serving");
  serve.signal(SIGTERM);
  EXPECT_EQ(serve.wait(), 0) << serve.output();
  EXPECT_NE(serve.output().find("SIGTERM, shutting down"), std::string::npos) << serve.output();
}

TEST(Cli, EvaluateMeasuresTheModelAndItsBundledDraft) {
  testing::ScratchDir dir;
  const std::string model = (dir / "m").string(), report = (dir / "report.json").string();
  ASSERT_EQ(ultraserve("make-checkpoint --config " + testing::fixture("configs/moe_topk2_norm.json").string() +
                       " --out " + model).exit_code, 0);
  // In the model's own draft/ folder, the draft is found without --draft.
  ASSERT_EQ(ultraserve("make-checkpoint --config " + testing::fixture("configs/dflash_draft_moe_topk2.json").string() +
                       " --out " + model + "/draft").exit_code, 0);
  const std::string text = (dir / "heldout.jsonl").string();
  testing::write_file(text, R"({"source": "a", "text": "In the beginning was the word, and the word was good."})" "\n"
                            "\n"
                            R"({"source": "b", "text": "The quick brown fox jumps over the lazy dog again."})" "\n"
                            R"({"source": "c", "text": "Short."})" "\n"
                            R"({"source": "d", "text": "Haus means house; Garten means garden; rot means red."})" "\n");
  CliRun r = ultraserve("evaluate --model " + model + " --text " + text + " --window 32 --prompts 3 --prompt-tokens 8 "
                        "--new-tokens 12 --blocks '[2,4,8]' --compare " + model + " --samples 2 --threads 2 --json " +
                        report);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("| block | tau |"), std::string::npos) << r.output;

  simdjson::dom::parser parser;
  simdjson::padded_string json(testing::read_file(report));
  simdjson::dom::element root = parser.parse(json);
  EXPECT_EQ(std::string_view(root["draft"]), model + "/draft");
  // 162 bytes (a token each) + 3 <|endoftext|> = 165 tokens: 6 windows of 32 (the last of 5), each
  // scoring every token but its first.
  EXPECT_EQ(int64_t(root["tokens"]), 165 - 6);
  const double perplexity = root["perplexity"];
  EXPECT_TRUE(std::isfinite(perplexity) && perplexity > 1) << perplexity;
  // A model against itself: the same logits to the bit.
  EXPECT_EQ(double(root["compare"]["top1_agreement"]), 1.0);
  EXPECT_EQ(double(root["compare"]["max_relative_logits_error"]), 0.0);
  EXPECT_EQ(double(root["compare"]["perplexity"]), perplexity);
  EXPECT_EQ(int64_t(root["speculative"]["prompts"]), 3);  // "Short." is too short
  simdjson::dom::array blocks = root["speculative"]["blocks"];
  EXPECT_EQ(blocks.size(), 3u);
  for (simdjson::dom::element b : blocks) {
    SCOPED_TRACE(int64_t(b["block"]));
    EXPECT_GE(double(b["tau"]), 1.0);
    EXPECT_EQ(int64_t(b["mismatches"]), 0);  // lossless
  }
  EXPECT_EQ(simdjson::dom::array(root["samples"]).size(), 2u);
  EXPECT_EQ(std::string_view(root["samples"].at(0)["prompt"]), "In the b");

  // --no-draft: no speculation section; bad input exits 1 naming the file (and the line).
  CliRun plain = ultraserve("evaluate --model " + model + " --text " + text + " --window 32 --samples 0 --no-draft");
  EXPECT_EQ(plain.exit_code, 0) << plain.output;
  EXPECT_EQ(plain.output.find("speculative"), std::string::npos) << plain.output;
  EXPECT_RUN(ultraserve("evaluate --model " + model + " --text " + (dir / "absent.jsonl").string()), 1,
             (dir / "absent.jsonl").string());
  testing::write_file(dir / "bad.jsonl", R"({"text": "fine"})" "\n" R"({"text": 3})" "\n");
  EXPECT_RUN(ultraserve("evaluate --model " + model + " --text " + (dir / "bad.jsonl").string()), 1,
             (dir / "bad.jsonl").string() + ":2: no string field \"text\"");
  EXPECT_RUN(ultraserve("evaluate --model= --text " + text), 2, "--model");
}

TEST(Cli, DevicesSaysWhatItFinds) {
  CliRun r = ultraserve("devices");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(r.output.find("cuda:") != std::string::npos || r.output.find("no GPU") != std::string::npos) << r.output;
}

}  // namespace
}  // namespace ultraserve
