// `npm run build`: bundle the page into dist/ (served by the server on $HTTP_PORT).
// The capture worklet is its own file: AudioWorklet modules are loaded by URL.
import { build } from "esbuild";
import { cpSync, mkdirSync, rmSync } from "node:fs";

rmSync("dist", { recursive: true, force: true });
mkdirSync("dist");
await build({
  entryPoints: {
    app: "src/main.ts",
    "calls-view": "src/calls-view.ts",
    "capture-worklet": "src/capture-worklet.ts",
  },
  bundle: true,
  format: "esm",
  target: "es2022",
  minify: true,
  sourcemap: true,
  outdir: "dist",
  logLevel: "warning",
});
cpSync("static", "dist", { recursive: true });
