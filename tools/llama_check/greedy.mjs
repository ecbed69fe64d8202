// llama.cpp (node-llama-cpp's prebuilt CPU build) as the independent client for our GGUF exports.
//   node greedy.mjs MODEL.gguf REQUESTS.json   -> JSON on stdout
// REQUESTS: {"max_tokens": N, "top_logprobs": K, "eog_probe": [ids],
//            "cases": [{"tokens": [ids]} | {"messages": [...]} | {"tokens": [ids], "forced": [ids]}]}.
// A "messages" case is rendered with the chat template stored in the GGUF (tokenizer.chat_template,
// through the Jinja engine node-llama-cpp uses) and tokenized by llama.cpp, special tokens parsed.
// Each case answers {prompt, tokens, stopped, stop_token, logprobs}: the greedy continuation (temperature 0)
// up to an end-of-generation token of llama.cpp's (not in tokens: stopped = true, stop_token its id) or max_tokens,
// and the K most likely next tokens after the prompt with their log-probabilities (softmax of the
// logits at temperature 1, nothing cut), for comparing logits up to their constant shift.
// A "forced" case is scored instead of answered (teacher forcing): after the prompt and each
// forced token before it, llama.cpp's most likely next token and its log-probability, and the
// forced token's: {prompt, scores: [[best_id, best_logprob, forced_logprob], ...]}. Two greedy
// decoders that part at a near-tie answer differently from there on; scoring one's answer in the
// other tells a near-tie (the forced token is almost the best) from a real difference.
import {readFileSync} from "node:fs";
import {getLlama, LlamaLogLevel} from "node-llama-cpp";
import {Template} from "@huggingface/jinja";

const [modelPath, requestsPath] = process.argv.slice(2);
if (!modelPath || !requestsPath) {
  console.error("usage: node greedy.mjs MODEL.gguf REQUESTS.json");
  process.exit(2);
}
const req = JSON.parse(readFileSync(requestsPath, "utf8"));
const t0 = Date.now();
const llama = await getLlama({gpu: false, build: "never", logLevel: LlamaLogLevel.error, maxThreads: 1});
const model = await llama.loadModel({modelPath});
// An f32 KV cache and no flash attention: llama.cpp's defaults (f16 cache) round every cached key
// and value, which flips greedy choices of small test models whose top logits lie close together.
const context = await model.createContext({
  contextSize: req.context_size ?? 1024, sequences: 1, batchSize: 512, flashAttention: false, threads: 1,
  experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32",
});
if (process.env.PEFT_LLAMA_CHECK_TIMES) console.error(`[llama_check] llama.cpp ready in ${Date.now() - t0} ms`);
const template = model.fileInfo.metadata?.tokenizer?.chat_template;

function promptOf(c) {
  if (c.tokens) return c.tokens;
  if (!template) throw new Error(`${modelPath}: no tokenizer.chat_template to render a messages case with`);
  const text = new Template(template).render({messages: c.messages, add_generation_prompt: true});
  return model.tokenize(text, true);
}

const everything = {temperature: 1, topK: 0, topP: 1, minP: 0};

// The next-token distribution after `tokens` (evaluated onto what the sequence holds), at
// temperature 1 with nothing cut: controlledEvaluate, which samples nothing. (Reading it from
// evaluateWithMetadata's generator and breaking out lost a step now and then: the next call
// yielded nothing, and the scores after it shifted by one position.)
async function nextDistribution(seq, tokens) {
  const input = [...tokens.slice(0, -1), [tokens.at(-1), {generateNext: {probabilities: true, options: everything}}]];
  const probabilities = (await seq.controlledEvaluate(input)).at(-1)?.next?.probabilities;
  if (!probabilities) throw new Error(`${modelPath}: llama.cpp gave no next-token distribution after ${tokens.length} tokens`);
  return probabilities;
}

async function scoreForced(seq, prompt, forced) {
  const scores = [];
  // A token of probability 0 (or below float range) scores a finite -1000: JSON has no -Infinity.
  const logOf = (p) => (p > 0 ? Math.log(p) : -1000);
  let input = prompt;
  for (const f of forced) {
    const probabilities = await nextDistribution(seq, input);
    let best = -1, bestP = -1;
    for (const [id, p] of probabilities) if (p > bestP) { bestP = p; best = id; }
    scores.push([best, logOf(bestP), logOf(probabilities.get(f) ?? 0)]);
    input = [f];
  }
  return scores;
}

// One sequence for every case, its history cleared in between: disposing a sequence right after
// breaking out of its generator and asking the context for another raced ("No sequences left").
const seq = context.getSequence();
const out = [];
for (const c of req.cases) {
  const prompt = promptOf(c);
  await seq.clearHistory();
  if (c.forced) {
    out.push({prompt, scores: await scoreForced(seq, prompt, c.forced)});
    continue;
  }
  const tokens = [];
  let stopped = false, stop_token = null;
  // yieldEogToken: without it node-llama-cpp ends the generator before an end token, silently
  // (stopped would never be true and a run-on reply would look like one that ended).
  for await (const t of seq.evaluate(prompt, {temperature: 0, yieldEogToken: true})) {
    if (model.isEogToken(t)) { stopped = true; stop_token = t; break; }
    tokens.push(t);
    if (tokens.length >= req.max_tokens) break;
  }
  await seq.clearHistory();
  let logprobs = [];
  if (req.top_logprobs > 0)
    logprobs = [...(await nextDistribution(seq, prompt)).entries()].sort((a, b) => b[1] - a[1])
        .slice(0, req.top_logprobs).map(([id, p]) => [id, Math.log(p)]);
  out.push({prompt, tokens, stopped, stop_token, logprobs});
}
seq.dispose();
// eog_probe: ids the caller stops at; llama.cpp must end generation at each of them too.
const eog = (req.eog_probe ?? []).filter((id) => model.isEogToken(id));
console.log(JSON.stringify({cases: out, eog}));
await context.dispose();
await model.dispose();
