// Drives `g4 serve` with the official openai npm client. Expected texts come from the
// HF gold (greedy continuations of brown-mini), detokenized by the g4 binary.
// Usage: node openai_client.mjs PORT G4_BINARY MODEL_DIR GOLD_SAFETENSORS
import OpenAI from "openai";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";

const [port, g4, modelDir, goldPath] = process.argv.slice(2);
const base = `http://127.0.0.1:${port}`;
let failures = 0, passes = 0;
function check(cond, what) {
  if (cond) { passes++; console.log(`ok   ${what}`); }
  else { failures++; console.log(`FAIL ${what}`); }
}

// Minimal safetensors reader for the I32 gold tensors.
function goldI32(name) {
  const buf = readFileSync(goldPath);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString("utf8"));
  const t = header[name];
  const [b, e] = t.data_offsets;
  const out = [];
  for (let i = 8 + n + b; i < 8 + n + e; i += 4) out.push(buf.readInt32LE(i));
  return out;
}
const detok = (ids) => execFileSync(g4, ["detokenize", "-m", modelDir, "--skip-special", "--ids", ids.join(",")]).toString().replace(/\n$/, "");

const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: "not-needed", maxRetries: 0, timeout: 120000 });

// Health went 503 -> 200 (the server was started with a load delay).
const sawLoading = process.env.G4_SAW_503 === "1";
check(sawLoading, "/health answered 503 while loading");

const models = await client.models.list();
check(models.data.some((m) => m.id === "brown-mini"), "models.list has brown-mini");

const cases = [0, 1, 2].map((i) => {
  const promptIds = goldI32(`prompt${i}_ids`);
  return { prompt: detok(promptIds), expected: detok(goldI32(`prompt${i}_greedy`)) };
});

for (const [i, c] of cases.entries()) {
  const r = await client.completions.create({ model: "brown-mini", prompt: c.prompt, max_tokens: 32, temperature: 0 });
  const text = r.choices[0].text;
  check(text === c.expected, `completion ${i} equals the gold greedy continuation (${JSON.stringify(text.slice(0, 40))}...)`);
  check(r.usage.completion_tokens === 32 && r.usage.total_tokens === r.usage.prompt_tokens + 32, `completion ${i} usage counts`);
  let streamed = "";
  let finish = null;
  const stream = await client.completions.create({ model: "brown-mini", prompt: c.prompt, max_tokens: 32, temperature: 0, stream: true });
  for await (const chunk of stream) {
    streamed += chunk.choices[0].text ?? "";
    finish = chunk.choices[0].finish_reason ?? finish;
  }
  check(streamed === text && finish === "length", `streamed completion ${i} equals the non-streamed one`);
}

// Chat, non-stream and stream, deterministic with temperature 0.
const msgs = [{ role: "system", content: "Be brief." }, { role: "user", content: "Tell me about the jury." }];
const chat = await client.chat.completions.create({ model: "brown-mini", messages: msgs, max_tokens: 20, temperature: 0 });
check(chat.choices[0].message.role === "assistant" && chat.choices[0].message.content.length > 0, "chat completion has content");
let chatStream = "";
let role = null;
const cs = await client.chat.completions.create({ model: "brown-mini", messages: msgs, max_tokens: 20, temperature: 0, stream: true,
                                                   stream_options: { include_usage: true } });
let usage = null;
for await (const chunk of cs) {
  if (chunk.choices.length) { chatStream += chunk.choices[0].delta.content ?? ""; role = chunk.choices[0].delta.role ?? role; }
  if (chunk.usage) usage = chunk.usage;
}
check(chatStream === chat.choices[0].message.content && role === "assistant", "streamed chat equals non-streamed chat");
check(usage && usage.completion_tokens === chat.usage.completion_tokens, "stream_options.include_usage reports usage");

// Seeded sampling is reproducible.
const s1 = await client.completions.create({ model: "brown-mini", prompt: "The", max_tokens: 16, temperature: 0.9, seed: 42 });
const s2 = await client.completions.create({ model: "brown-mini", prompt: "The", max_tokens: 16, temperature: 0.9, seed: 42 });
check(s1.choices[0].text === s2.choices[0].text, "same seed, same sample");

// Stop strings.
const full = cases[0].expected;
const stopWord = full.split(" ").filter((w) => w.length > 2)[2];
const st = await client.completions.create({ model: "brown-mini", prompt: cases[0].prompt, max_tokens: 32, temperature: 0, stop: [stopWord] });
check(!st.choices[0].text.includes(stopWord) && st.choices[0].finish_reason === "stop", `stop string ${JSON.stringify(stopWord)} ends the text`);

// Errors through the client.
try { await client.completions.create({ model: "gpt-4", prompt: "x" }); check(false, "unknown model rejected"); }
catch (e) { check(e.status === 404 && e.error?.code === "model_not_found", "unknown model -> 404 model_not_found"); }
try { await client.completions.create({ model: "brown-mini", prompt: "x", max_tokens: -5 }); check(false, "negative max_tokens rejected"); }
catch (e) { check(e.status === 400 && e.error?.param === "max_tokens", "negative max_tokens -> 400"); }
try { await client.chat.completions.create({ model: "brown-mini", messages: [] }); check(false, "empty messages rejected"); }
catch (e) { check(e.status === 400, "empty messages -> 400"); }

// A client that disconnects mid-stream frees its slot.
const ac = new AbortController();
try {
  const long = await client.completions.create({ model: "brown-mini", prompt: "The", max_tokens: 2000, temperature: 1, stream: true },
                                               { signal: ac.signal });
  let n = 0;
  for await (const _ of long) { if (++n === 3) ac.abort(); }
} catch (e) { /* aborted */ }
let busy = -1;
for (let t = 0; t < 50; t++) {
  const m = await (await fetch(`${base}/metrics`)).text();
  busy = Number(/g4_slots_busy (\d+)/.exec(m)[1]);
  if (busy === 0) break;
  await new Promise((r) => setTimeout(r, 100));
}
check(busy === 0, "a disconnected client's slot is freed");

// 32 concurrent streaming clients, all correct.
const t0 = Date.now();
const results = await Promise.all(Array.from({ length: 32 }, async (_, k) => {
  const c = cases[k % 3];
  const s = await client.completions.create({ model: "brown-mini", prompt: c.prompt, max_tokens: 32, temperature: 0, stream: true });
  let text = "";
  for await (const chunk of s) text += chunk.choices[0].text ?? "";
  return { text, k };
}));
const firstTexts = await Promise.all([0, 1, 2].map(async (i) =>
  (await client.completions.create({ model: "brown-mini", prompt: cases[i].prompt, max_tokens: 32, temperature: 0 })).choices[0].text));
check(results.every((r) => r.text === firstTexts[r.k % 3]), `32 concurrent streaming clients all finished with the right text (${Date.now() - t0} ms)`);

const metrics = await (await fetch(`${base}/metrics`)).text();
check(/g4_requests_total\{endpoint="\/v1\/completions",status="200"\} \d+/.test(metrics) && /g4_request_duration_seconds_count \d+/.test(metrics),
      "/metrics has request counters and latency");

console.log(`${passes} passed, ${failures} failed`);
process.exit(failures ? 1 : 0);
