// Continue's `@continuedev/openai-adapters` against the gateway, as Continue's `provider: openai`
// calls it: node continue_adapters.mjs <base url ending in /v1/>
// Prints what it saw as one JSON object; tests/server/test_js_clients.py checks it.
import { constructLlmApi } from "@continuedev/openai-adapters";

const api = constructLlmApi({ provider: "openai", apiKey: "unused", apiBase: process.argv[2] });
const signal = new AbortController().signal;
const out = { fim: [] };
for await (const chunk of api.fimStream({
  model: "starcoder2", prompt: "def add(a, b):\n    ", suffix: "\n", max_tokens: 8,
  stop: ["\n\n"],
}, signal)) {
  out.fim.push(chunk.choices[0].delta.content ?? "");
}
const chat = await api.chatCompletionNonStream({
  model: "starcoder2-15b-instruct", max_tokens: 8,
  messages: [{ role: "user", content: "Add two numbers." }],
}, signal);
out.chat = chat.choices[0].message.content;
out.chatStream = [];
for await (const chunk of api.chatCompletionStream({
  model: "starcoder2-15b-instruct", max_tokens: 8, stream: true,
  messages: [{ role: "user", content: "Add two numbers." }],
}, signal)) {
  if (chunk.choices.length > 0) out.chatStream.push(chunk.choices[0].delta.content ?? "");
}
console.log(JSON.stringify(out));
