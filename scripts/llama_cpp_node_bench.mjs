// llama.cpp's prefill and decode speed through node-llama-cpp's prebuilt CPU binaries (no compiler
// needed), measured the way scripts/bench_vs_llama_cpp.py measures llama-cpp-python.
//
//   node scripts/llama_cpp_node_bench.mjs NODE_LLAMA_CPP_DIR MODEL.gguf THREADS PROMPT_TOKENS GEN_TOKENS BASE_TEXT
//
// NODE_LLAMA_CPP_DIR is a folder where `npm i node-llama-cpp@3.22.1` ran. Prints one JSON object:
// prefill_tok_s, decode_tok_s, the package version and the CPU backend variant ggml loaded.
import path from "node:path";
import fs from "node:fs";
import { pathToFileURL } from "node:url";

const [dir, modelPath, threadsArg, promptArg, genArg, base] = process.argv.slice(2);
if (!base) {
    console.error("usage: llama_cpp_node_bench.mjs NODE_LLAMA_CPP_DIR MODEL.gguf THREADS PROMPT_TOKENS GEN_TOKENS BASE_TEXT");
    process.exit(2);
}
const pkgDir = path.join(dir, "node_modules", "node-llama-cpp");
const pkgJson = path.join(pkgDir, "package.json");
if (!fs.existsSync(pkgJson)) {
    console.error(`error: ${pkgJson} does not exist; run \`npm i node-llama-cpp@3.22.1\` in ${dir}`);
    process.exit(2);
}
const version = JSON.parse(fs.readFileSync(pkgJson, "utf8")).version;
const { getLlama, LlamaLogLevel } = await import(pathToFileURL(path.join(pkgDir, "dist", "index.js")).href);
const [threads, promptTokens, genTokens] = [threadsArg, promptArg, genArg].map(Number);

// ggml reports the CPU variant it picked (libggml-cpu-<variant>.so) in a debug message at start-up
let backend = null;
const llama = await getLlama({
    gpu: false,
    build: "never",
    maxThreads: threads,
    logLevel: LlamaLogLevel.debug,
    logger: (_level, message) => {
        const m = /libggml-cpu-([\w-]+)\.so/.exec(message);
        if (m) backend = m[1];
    },
});
llama.logLevel = LlamaLogLevel.error;
const model = await llama.loadModel({ modelPath, gpuLayers: 0 });
const baseIds = model.tokenize(base);
let ids = [];
while (ids.length < promptTokens) ids = ids.concat(baseIds);
ids = ids.slice(0, promptTokens);

const context = await model.createContext({
    contextSize: promptTokens + genTokens + 64,
    batchSize: promptTokens,
    threads: { ideal: threads, min: threads },
});
const seq = context.getSequence();

// prefill: the whole prompt in one batch, after a short warm-up
await seq.evaluateWithoutGeneratingNewTokens(ids.slice(0, 16));
await seq.clearHistory();
let t = performance.now();
await seq.evaluateWithoutGeneratingNewTokens(ids);
const prefill = promptTokens / ((performance.now() - t) / 1000);

// decode: greedy, one token per step after a 32-token prompt (the first step, which also
// evaluates the prompt, is not timed); end-of-text tokens do not stop it
await seq.clearHistory();
const it = seq.evaluate(ids.slice(0, 32), { temperature: 0, yieldEogToken: true });
await it.next();
t = performance.now();
for (let i = 0; i < genTokens; i++) await it.next();
const decode = genTokens / ((performance.now() - t) / 1000);
await it.return();

console.log(JSON.stringify({ prefill_tok_s: prefill, decode_tok_s: decode, node_llama_cpp: version, cpu_backend: backend, cpu_features: llama.systemInfo.trim() }));
await context.dispose();
await model.dispose();
await llama.dispose();
