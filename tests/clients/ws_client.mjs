// The streaming protocol driven by a WebSocket client we did not write: node's `ws` package.
// Run through run_with_server.sh (ULTRASERVE_URL). Prints "N passed, M failed".
import WebSocket from "ws";

const url = process.env.ULTRASERVE_URL.replace("http://", "ws://") + "/v1/stream";
let passed = 0, failed = 0;
function check(name, ok, detail = "") {
  if (ok) passed++; else { failed++; console.log(`FAIL ${name} ${detail}`); }
}

function connect() {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    ws.events = [];
    ws.waiters = [];
    ws.on("message", (data, isBinary) => {
      const event = JSON.parse(data.toString());
      ws.events.push(event);
      ws.waiters = ws.waiters.filter((w) => !w(event));
    });
    ws.on("open", () => resolve(ws));
    ws.on("error", reject);
  });
}
// Resolves with the first event for which pred holds (looking at past events too).
function waitFor(ws, pred, ms = 20000) {
  const seen = ws.events.find(pred);
  if (seen) return Promise.resolve(seen);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("timeout")), ms);
    ws.waiters.push((e) => { if (pred(e)) { clearTimeout(timer); resolve(e); return true; } return false; });
  });
}
const generate = (id, prompt, max_tokens, extra = {}) =>
  JSON.stringify({ type: "generate", id, prompt, max_tokens, temperature: 0, ...extra });

const ws = await connect();
ws.send(generate("one", "Hello", 10));
const done = await waitFor(ws, (e) => e.id === "one" && e.type === "done");
const deltas = ws.events.filter((e) => e.id === "one" && e.type === "delta");
const tokens = deltas.flatMap((e) => e.tokens);
check("done carries usage", done.usage.completion_tokens === tokens.length, JSON.stringify(done));
check("finish reason", ["stop", "length"].includes(done.finish_reason), done.finish_reason);
check("time to first token reported", typeof done.time_to_first_token_ms === "number");

ws.send("{oops");
const err = await waitFor(ws, (e) => e.type === "error" && e.code === "invalid_json");
check("malformed JSON answered with an error", err.id === null);
ws.send(JSON.stringify({ type: "ping" }));
check("connection still works after bad input", (await waitFor(ws, (e) => e.type === "pong")).type === "pong");

ws.send(Buffer.from([1, 2, 3]), { binary: true });
check("binary frame refused", (await waitFor(ws, (e) => e.code === "invalid_frame")).type === "error");

ws.send(generate("long", "go on", 200));
ws.send(JSON.stringify({ type: "cancel", id: "long" }));
const ended = await waitFor(ws, (e) => e.id === "long" && (e.type === "done" || e.type === "error"));
// Either the cancel arrived in time, or the request had already finished (a random model may
// sample a stop token early) and the cancel is answered as one for an unknown id.
const cancelOk = ended.finish_reason === "cancelled" ||
  (await waitFor(ws, (e) => e.id === "long" && e.code === "unknown_id")).type === "error";
check("cancel ends the request", cancelOk, JSON.stringify(ended));

// Concurrency: 5 connections x 10 requests; greedy output of equal prompts must be equal.
const conns = await Promise.all([0, 1, 2, 3, 4].map(connect));
const results = await Promise.all(conns.flatMap((c, ci) => [...Array(10).keys()].map(async (r) => {
  const id = `c${ci}r${r}`;
  c.send(generate(id, "same prompt", 8));
  const end = await waitFor(c, (e) => e.id === id && (e.type === "done" || e.type === "error"));
  return end.type === "done" ? c.events.filter((e) => e.id === id && e.type === "delta").flatMap((e) => e.tokens).join(",") : "error";
})));
check("50 concurrent requests complete", results.every((r) => r !== "error"));
check("same greedy prompt, same tokens everywhere", new Set(results).size === 1, [...new Set(results)].join(" | "));

for (const c of [ws, ...conns]) c.close();
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
