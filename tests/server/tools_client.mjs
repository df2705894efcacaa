// Issue 16: what real clients send, against `g4 serve -m brown-mini-tools --debug-inject`.
// brown-mini-tools is brown-mini with Gemma 4's full special-token set; the model never
// chooses a tool or thinks by itself, so tool calls are forced (tool_choice named or
// required, by constrained decoding) and thoughts come from injected outputs
// (g4_debug_output, honoured only with --debug-inject).
// Usage: node tools_client.mjs PORT G4_BINARY MODEL_DIR
import OpenAI from "openai";
import { createOpenAICompatible } from "@ai-sdk/openai-compatible";
import { generateText, streamText, tool, jsonSchema, stepCountIs } from "ai";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [port, g4, modelDir] = process.argv.slice(2);
const base = `http://127.0.0.1:${port}`;
let failures = 0, passes = 0;
function check(cond, what) {
  if (cond) { passes++; console.log(`ok   ${what}`); }
  else { failures++; console.log(`FAIL ${what}`); }
}
const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: "not-needed", maxRetries: 0, timeout: 120000 });
const model = "brown-mini-tools";
const weather = {
  type: "function",
  function: {
    name: "get_weather", description: "Current weather in a city",
    parameters: { type: "object", properties: { city: { type: "string", maxLength: 12 }, unit: { type: "string", enum: ["c", "f"] } },
                  required: ["city", "unit"], additionalProperties: false },
  },
};
const clock = { type: "function", function: { name: "get_time", description: "Time", parameters: { type: "object", properties: { zone: { type: "string", maxLength: 8 } }, required: ["zone"] } } };
const user = [{ role: "user", content: "What is the weather in Paris?" }];

// ---- tools with the openai client -----------------------------------------------------
{
  const r = await client.chat.completions.create({ model, messages: user, tools: [weather, clock], max_tokens: 60, temperature: 0,
                                                   tool_choice: { type: "function", function: { name: "get_weather" } } });
  const c = r.choices[0];
  console.log("named tool_choice ->", JSON.stringify(c.message));
  check(c.finish_reason === "tool_calls", "named tool_choice: finish_reason tool_calls");
  check(c.message.content === null, "  content is null");
  const call = c.message.tool_calls?.[0];
  check(call?.type === "function" && call?.function.name === "get_weather" && /^call_/.test(call?.id), "  one get_weather call with an id");
  let args = null;
  try { args = JSON.parse(call.function.arguments); } catch {}
  check(args && typeof args.city === "string" && args.city.length <= 12 && ["c", "f"].includes(args.unit) && Object.keys(args).length === 2,
        "  arguments: a JSON string that validates against the tool's schema");
  // The round trip: the call and its result go back; the answer is text.
  const r2 = await client.chat.completions.create({ model, max_tokens: 8, temperature: 0, tools: [weather, clock],
    messages: [...user, c.message, { role: "tool", tool_call_id: call.id, content: JSON.stringify({ temp: 21 }) }] });
  check(typeof r2.choices[0].message.content === "string" && !r2.choices[0].message.tool_calls, "round trip: tool message accepted, the answer is content");
  check(r2.usage.prompt_tokens > r.usage.prompt_tokens, "  the call and the result are in the prompt");
}
{
  const stream = await client.chat.completions.create({ model, messages: user, tools: [weather, clock], tool_choice: "required",
                                                        max_tokens: 80, temperature: 0, stream: true });
  const calls = [];
  let finish = null, content = "";
  for await (const chunk of stream) {
    const ch = chunk.choices[0];
    if (!ch) continue;
    if (ch.delta?.content) content += ch.delta.content;
    for (const tc of ch.delta?.tool_calls ?? []) {
      if (!calls[tc.index]) calls[tc.index] = { id: tc.id, name: tc.function?.name, arguments: "" };
      calls[tc.index].arguments += tc.function?.arguments ?? "";
    }
    if (ch.finish_reason) finish = ch.finish_reason;
  }
  console.log("required, streamed ->", JSON.stringify(calls), finish);
  check(finish === "tool_calls" && calls.length >= 1, "streamed required tool_choice: delta.tool_calls, finish_reason tool_calls");
  check(calls.every((c) => ["get_weather", "get_time"].includes(c.name) && c.id && JSON.parse(c.arguments)), "  every streamed call has an id, a name, JSON arguments");
  check(content === "", "  no content");
}

// ---- thinking and parsing, on injected outputs ------------------------------------------
const injected = "<|channel>thought\nThe user asks about Paris.<channel|>Checking."
  + "<|tool_call>call:get_weather{city:<|\"|>Paris<|\"|>,unit:<|\"|>c<|\"|>}<tool_call|>"
  + "<|tool_call>call:get_time{zone:<|\"|>CET<|\"|>}<tool_call|><|tool_response>";
{
  const r = await client.chat.completions.create({ model, messages: user, tools: [weather, clock], max_tokens: 100,
                                                   reasoning_effort: "high", g4_debug_output: injected });
  const m = r.choices[0].message;
  console.log("injected ->", JSON.stringify(m));
  check(m.reasoning_content === "The user asks about Paris.", "thinking: message.reasoning_content holds the thought channel");
  check(m.content === "Checking.", "  content has no thought text");
  check(m.tool_calls?.length === 2 && m.tool_calls[1].function.name === "get_time" && m.tool_calls[1].function.arguments === '{"zone":"CET"}',
        "  two calls in one turn");
  check(r.choices[0].finish_reason === "tool_calls", "  finish_reason tool_calls");
  const s = await client.chat.completions.create({ model, messages: user, tools: [weather, clock], max_tokens: 100, stream: true,
                                                   chat_template_kwargs: { enable_thinking: true }, g4_debug_output: injected });
  let reasoning = "", content = "", n = 0, finish = null;
  const names = [];
  for await (const chunk of s) {
    const d = chunk.choices[0]?.delta ?? {};
    if (d.reasoning_content) { reasoning += d.reasoning_content; n++; }
    if (d.content) content += d.content;
    for (const tc of d.tool_calls ?? []) if (tc.function?.name) names[tc.index] = tc.function.name;
    if (chunk.choices[0]?.finish_reason) finish = chunk.choices[0].finish_reason;
  }
  check(reasoning === "The user asks about Paris." && n > 1, `  streamed as delta.reasoning_content (${n} chunks)`);
  check(content === "Checking." && names.join(",") === "get_weather,get_time" && finish === "tool_calls", "  streamed content and delta.tool_calls");
  const bad = await client.chat.completions.create({ model, messages: user, tools: [weather], max_tokens: 100,
                                                     g4_debug_output: "Sure <|tool_call>call:get_weather{city:<tool_call|>" });
  check(bad.choices[0].message.content === "Sure <|tool_call>call:get_weather{city:<tool_call|>" && !bad.choices[0].message.tool_calls,
        "malformed call from the model: returned as content, not a 500");
  const think = async (extra) => (await client.chat.completions.create({ model, messages: user, max_tokens: 1, temperature: 0, ...extra })).usage.prompt_tokens;
  const off = await think({}), on = await think({ reasoning_effort: "medium" }), kw = await think({ chat_template_kwargs: { enable_thinking: true } });
  check(on === kw && on > off, `thinking on adds the system turn with <|think|> (prompt ${off} -> ${on} tokens)`);
}

// ---- structured output --------------------------------------------------------------------
{
  const schema = {
    type: "object", additionalProperties: false, required: ["name", "address", "tags"],
    properties: {
      name: { type: "string", maxLength: 10 },
      age: { type: "integer" },
      address: { $ref: "#/$defs/address" },
      tags: { type: "array", items: { enum: ["a", "b", "c"] }, minItems: 1, maxItems: 3 },
      extra: { anyOf: [{ type: "null" }, { type: "boolean" }] },
    },
    $defs: { address: { type: "object", additionalProperties: false, required: ["city"],
                        properties: { city: { type: "string", maxLength: 8 }, zip: { type: "integer" } } } },
  };
  const r = await client.chat.completions.create({ model, messages: [{ role: "user", content: "A person as JSON." }], max_tokens: 120, temperature: 0,
                                                   response_format: { type: "json_schema", json_schema: { name: "person", schema, strict: true } } });
  const text = r.choices[0].message.content;
  console.log("json_schema ->", text);
  let j = null;
  try { j = JSON.parse(text); } catch {}
  const valid = j && typeof j.name === "string" && j.name.length <= 10 && (j.age === undefined || Number.isInteger(j.age))
    && typeof j.address?.city === "string" && Object.keys(j.address).every((k) => ["city", "zip"].includes(k))
    && Array.isArray(j.tags) && j.tags.length >= 1 && j.tags.length <= 3 && j.tags.every((t) => ["a", "b", "c"].includes(t))
    && Object.keys(j).every((k) => k in schema.properties);
  check(valid, "json_schema (nested, $ref, enum, anyOf, min/maxItems): the content parses and validates");
  const o = await client.chat.completions.create({ model, messages: user, max_tokens: 120, temperature: 0.9, seed: 3, response_format: { type: "json_object" } });
  let ok = false;
  try { ok = typeof JSON.parse(o.choices[0].message.content) === "object"; } catch {}
  check(ok || o.choices[0].finish_reason === "length", `json_object: an object (or cut by max_tokens): ${o.choices[0].message.content.slice(0, 60)}`);
  try {
    await client.chat.completions.create({ model, messages: user, response_format: { type: "json_schema", json_schema: { name: "x", schema: { type: "string", format: "email" } } } });
    check(false, "unsupported schema keyword -> 400");
  } catch (e) {
    check(e.status === 400 && /'format'/.test(e.message), `unsupported schema keyword -> 400 naming it (${e.message})`);
  }
}

// ---- logprobs ----------------------------------------------------------------------------
// Reference: g4 logits on the same token ids, log-softmax in float64 here.
function logSoftmaxRows(ids) {
  const dir = mkdtempSync(join(tmpdir(), "g4lp-"));
  try {
    execFileSync(g4, ["logits", "-m", modelDir, "--tokens", ids.join(","), "--precision", "f64", "-o", join(dir, "l.safetensors")]);
    const buf = readFileSync(join(dir, "l.safetensors"));
    const n = Number(buf.readBigUInt64LE(0));
    const h = JSON.parse(buf.subarray(8, 8 + n).toString("utf8")).logits;
    const [T, V] = h.shape;
    const rows = [];
    for (let t = 0; t < T; t++) {
      const z = new Float64Array(V);
      for (let v = 0; v < V; v++) z[v] = buf.readFloatLE(8 + n + h.data_offsets[0] + 4 * (t * V + v));
      let m = -Infinity; for (const x of z) m = Math.max(m, x);
      let s = 0; for (const x of z) s += Math.exp(x - m);
      const lse = m + Math.log(s);
      rows.push(Array.from(z, (x) => x - lse));
    }
    return rows;
  } finally { rmSync(dir, { recursive: true, force: true }); }
}
{
  // lm-eval-harness local-completions loglikelihood: token ids, echo, logprobs, max_tokens 0.
  const ids = (await (await fetch(`${base}/tokenize`, { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ content: "The jury said the election was", add_special: true }) })).json()).tokens;
  const r = await client.completions.create({ model, prompt: ids, max_tokens: 0, echo: true, logprobs: 1, temperature: 0 });
  const lp = r.choices[0].logprobs;
  const ref = logSoftmaxRows(ids);
  let maxd = 0;
  for (let t = 1; t < ids.length; t++) maxd = Math.max(maxd, Math.abs(lp.token_logprobs[t] - ref[t - 1][ids[t]]));
  console.log(`echo logprobs: ${ids.length} tokens, max |g4 serve - g4 logits| = ${maxd.toExponential(2)}`);
  check(lp.token_logprobs[0] === null && lp.tokens.length === ids.length && r.choices[0].text === "The jury said the election was",
        "completions echo: the prompt's tokens and text come back, the first logprob is null");
  check(maxd < 2e-5, "  token_logprobs equal g4 logits' log-softmax (< 2e-5; ~2e-7 seen)");
  const batch = await client.completions.create({ model, prompt: [ids], max_tokens: 1, echo: true, logprobs: 1, temperature: 0 });
  check(batch.choices[0].logprobs.token_logprobs.length === ids.length + 1
        && Math.abs(batch.choices[0].logprobs.token_logprobs[5] - lp.token_logprobs[5]) < 1e-6,
        "  a batch of one token list ([[ids]], lm-eval's shape) with max_tokens 1: prompt + 1 scored");
  const top = lp.top_logprobs[3];
  check(top && Object.keys(top).length >= 1, "  top_logprobs per position");
  // Chat: the sampled tokens' logprobs and their top alternatives (greedy: the first is the pick).
  const c = await client.chat.completions.create({ model, messages: user, max_tokens: 5, temperature: 0, logprobs: true, top_logprobs: 3 });
  const content = c.choices[0].logprobs?.content ?? [];
  check(content.length === c.usage.completion_tokens && content.every((x) => x.top_logprobs.length === 3 && x.logprob <= 0
        && Math.abs(x.top_logprobs[0].logprob - x.logprob) < 1e-6 && Array.isArray(x.bytes)),
        `chat logprobs: one entry per token with 3 alternatives, greedy = top-1 (${content.length} tokens)`);
}

// ---- sampling -----------------------------------------------------------------------------
{
  const ask = (extra) => client.chat.completions.create({ model, messages: user, max_tokens: 12, temperature: 1, ...extra }).then((r) => r.choices[0].message.content);
  const a = await ask({ seed: 42 }), b = await ask({ seed: 42 });
  check(a === b, "same seed -> same output");
  const banned = await client.chat.completions.create({ model, messages: user, max_tokens: 6, temperature: 0, logprobs: true });
  const first = banned.choices[0].logprobs.content[0].token;
  const firstId = (await (await fetch(`${base}/tokenize`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ content: first }) })).json()).tokens[0];
  const biased = await client.chat.completions.create({ model, messages: user, max_tokens: 6, temperature: 0, logprobs: true, logit_bias: { [firstId]: -100 } });
  check(biased.choices[0].logprobs.content[0].token !== first, `logit_bias -100 bans the greedy first token ('${first}')`);
  const pen = await ask({ temperature: 0, frequency_penalty: 2, presence_penalty: 2, max_tokens: 30 });
  const plain = await ask({ temperature: 0, max_tokens: 30 });
  check(typeof pen === "string" && pen !== plain, "frequency/presence penalties change greedy output");
}

// ---- the small endpoints ------------------------------------------------------------------
{
  const props = await (await fetch(`${base}/props`)).json();
  check(props.n_ctx > 0 && props.model === model && props.chat_template_caps.supports_tools === true, "/props: model, context, template caps");
  const models = await client.models.list();
  check(models.data[0].context_length === props.n_ctx, "/v1/models: context_length");
  const tk = await (await fetch(`${base}/tokenize`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ content: "jury <|tool_call>", with_pieces: true }) })).json();
  const dt = await (await fetch(`${base}/detokenize`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ tokens: tk.tokens.map((t) => t.id) }) })).json();
  check(dt.content === "jury <|tool_call>" && tk.tokens.some((t) => t.piece === "<|tool_call>"), "/tokenize + /detokenize round trip (llama-server shape)");
}

// ---- an agent framework: the Vercel AI SDK drives the tool loop itself -------------------
{
  const provider = createOpenAICompatible({ name: "g4", baseURL: `${base}/v1`, apiKey: "not-needed" });
  const seen = [];
  const tools = {
    get_weather: tool({
      description: "Current weather in a city",
      inputSchema: jsonSchema(weather.function.parameters),
      execute: async ({ city, unit }) => { seen.push(city); return { city, unit, temp: 21 }; },
    }),
  };
  // First step forced to call the tool (the model would not), then free text.
  const prepareStep = ({ stepNumber }) => (stepNumber === 0 ? { toolChoice: { type: "tool", toolName: "get_weather" } } : { toolChoice: "none" });
  const r = await generateText({ model: provider(model), tools, prepareStep, stopWhen: stepCountIs(3), prompt: "Weather in Paris?",
                                 maxOutputTokens: 60, temperature: 0, maxRetries: 0 });
  console.log("ai-sdk generateText steps:", r.steps.map((s) => `${s.finishReason}:${s.toolCalls.map((c) => c.toolName)}`).join(" | "), JSON.stringify(r.text));
  check(r.steps.length === 2 && r.steps[0].toolCalls[0]?.toolName === "get_weather" && seen.length === 1,
        "AI SDK generateText: call -> tool executed -> answer (2 steps)");
  check(r.steps[0].toolResults[0]?.output?.temp === 21 && typeof r.text === "string" && r.steps[1].toolCalls.length === 0,
        "  the tool result went back and the last step is text");
  const s = streamText({ model: provider(model), tools, prepareStep, stopWhen: stepCountIs(3), prompt: "Weather in Oslo?",
                         maxOutputTokens: 60, temperature: 0, maxRetries: 0 });
  const kinds = new Set();
  for await (const part of s.fullStream) kinds.add(part.type);
  const steps = await s.steps;
  console.log("ai-sdk streamText parts:", [...kinds].join(","));
  check(steps.length === 2 && kinds.has("tool-call") && kinds.has("tool-result") && seen.length === 2,
        "AI SDK streamText: the same loop over streamed tool-call deltas");
}

console.log(`tools client: ${passes} passed, ${failures} failed`);
process.exit(failures ? 1 : 0);
