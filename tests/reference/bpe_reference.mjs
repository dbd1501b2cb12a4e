// Records reference encodings for the byte-level BPE fixtures with transformers.js, an
// implementation independent of worker/tokenizer/bpe_tokenizer.cc and of the Python trainer.
//
// Setup (outside the repository; --ignore-scripts skips onnxruntime's binary download, which
// tokenizers do not need):
//
//   mkdir -p /tmp/bpe-ref && cd /tmp/bpe-ref && npm init -y && \
//     npm install --ignore-scripts @huggingface/transformers      # 4.3.2 when recorded
//   /usr/bin/python3 tests/reference/make_bpe_tokenizers.py      # from the repository root
//   node tests/reference/bpe_reference.mjs /tmp/bpe-ref             # from the repository root
//
// (The module is imported from the folder named by the first argument, so no node_modules
// is needed in the repository.) Loads tests/fixtures/bpe/<name>/tokenizer.json and
// tokenizer_config.json offline and writes tests/fixtures/bpe/expected.json:
//   {"<fixture>": [{"text": ..., "ids": [...], "decoded": ..., "ids_with_special": [...]}, ...]}
// where ids = encode(text, add_special_tokens=false), decoded = decode(ids) with special
// tokens kept, ids_with_special = encode(text) with the post-processor's tokens.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const fixtures = path.resolve(here, '..', 'fixtures', 'bpe');
const installDir = process.argv[2] ?? '/tmp/bpe-ref';
const entry = path.join(installDir, 'node_modules', '@huggingface', 'transformers', 'dist',
                        'transformers.node.mjs');
const { AutoTokenizer, env } = await import(pathToFileURL(entry).href);

env.allowRemoteModels = false;
env.allowLocalModels = true;
env.localModelPath = fixtures + path.sep;

const texts = JSON.parse(fs.readFileSync(path.join(fixtures, 'texts.json'), 'utf8'));
const expected = {};
for (const name of ['gpt2_style', 'llama3_style', 'neox_style']) {
  const tokenizer = await AutoTokenizer.from_pretrained(name, { local_files_only: true });
  expected[name] = texts.map((text) => {
    const ids = tokenizer.encode(text, { add_special_tokens: false });
    const decoded = ids.length === 0 ? '' : tokenizer.decode(ids, { skip_special_tokens: false });
    const idsWithSpecial = tokenizer.encode(text);
    return { text, ids, decoded, ids_with_special: idsWithSpecial };
  });
}

// One record per line keeps the file small and diffs readable.
const lines = [];
for (const [name, records] of Object.entries(expected)) {
  const body = records.map((r) => '  ' + JSON.stringify(r)).join(',\n');
  lines.push(`${JSON.stringify(name)}: [\n${body}\n]`);
}
fs.writeFileSync(path.join(fixtures, 'expected.json'), '{\n' + lines.join(',\n') + '\n}\n');
console.log(`wrote ${path.join(fixtures, 'expected.json')}`);
