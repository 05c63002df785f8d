// The official `ollama` npm client against the gateway: node ollama_client.mjs <base url>
// Prints what it saw as one JSON object; tests/server/test_js_clients.py checks it.
import { Ollama } from "ollama";

const ollama = new Ollama({ host: process.argv[2] });
const out = {};
out.tags = (await ollama.list()).models.map((m) => m.name);
const shown = await ollama.show({ model: "starcoder2:3b" });
out.show = { template: shown.template, capabilities: shown.capabilities,
             parameters: shown.parameters };
const done = await ollama.generate({
  model: "starcoder2:3b", prompt: "def add(a, b):\n    ", suffix: "\n", stream: false,
  options: { num_predict: 8 },
});
out.generate = { response: done.response, done: done.done, eval_count: done.eval_count };
out.stream = [];
for await (const part of await ollama.generate({
  model: "starcoder2", prompt: "def add(a, b):", stream: true, options: { num_predict: 8 },
})) {
  out.stream.push({ response: part.response, done: part.done });
}
try {
  await ollama.generate({ model: "llama3", prompt: "x", stream: false });
  out.missing = null;
} catch (err) {
  out.missing = { status: err.status_code, error: err.error };
}
console.log(JSON.stringify(out));
