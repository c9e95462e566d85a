// Bundles the study viewer into ../static/dist/ (served by Django's static files and whitenoise).
//
// The DICOM image loader decodes in a module web worker and loads its codecs' .wasm files through
// `new URL(..., import.meta.url)`, which esbuild leaves alone. So the worker is bundled as its own
// entry point beside viewer.js, the codec URLs are rewritten to plain file names next to it, and
// the .wasm files are copied there: every URL then resolves inside /static/dist/ at run time.
import { build } from 'esbuild';
import { copyFileSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const outdir = join(here, '..', 'static', 'dist');
const require = createRequire(import.meta.url);
const loaderDir = dirname(require.resolve('@cornerstonejs/dicom-image-loader'));

// `new URL('@cornerstonejs/codec-x/decodewasm', import.meta.url)` -> `new URL('./file.wasm', import.meta.url)`.
const codecUrl = /new URL\(\s*'(@cornerstonejs\/codec-[^']+)'\s*,\s*import\.meta\.url\s*\)/g;
const wasmFiles = new Set();
const codecUrls = {
  name: 'codec-urls',
  setup(b) {
    b.onLoad({ filter: /dicom-image-loader[\\/].*[\\/]decoders[\\/][^\\/]+\.js$/ }, (args) => {
      const source = readFileSync(args.path, 'utf8').replace(codecUrl, (_, spec) => {
        const file = require.resolve(spec);
        wasmFiles.add(file);
        return `new URL('./${basename(file)}', import.meta.url)`;
      });
      return { contents: source, loader: 'js' };
    });
  },
};

const common = {
  bundle: true,
  format: 'esm',
  target: ['chrome110', 'firefox110', 'safari16'],
  minify: true,
  sourcemap: false,
  logLevel: 'warning',
  // Emscripten codecs test for node and `require('fs')`/`require('path')` only there.
  external: ['fs', 'path'],
  plugins: [codecUrls],
  define: { 'process.env.NODE_ENV': '"production"' },
};

rmSync(outdir, { recursive: true, force: true });
mkdirSync(outdir, { recursive: true });
// Split: the mouse tools (and what only they use) load after the first image as separate chunks.
await build({
  ...common,
  entryPoints: { viewer: join(here, 'src', 'viewer.js') },
  outdir,
  splitting: true,
  chunkNames: '[name]-[hash]', // beside viewer.js: import.meta.url then resolves the worker and codecs
});
await build({
  ...common,
  entryPoints: { decodeImageFrameWorker: join(loaderDir, 'decodeImageFrameWorker.js') },
  outdir,
});
for (const file of wasmFiles) copyFileSync(file, join(outdir, basename(file)));
console.log(`viewer bundle, decode worker and ${wasmFiles.size} codecs written to ${outdir}`);
