// Bundles the Node and browser entries into dist/ as ESM with .d.ts files beside them. The two
// .wasm builds are copied there by scripts/build-wasm.sh, next to the JS that references them
// with `new URL("./batchnorm-*.wasm", import.meta.url)`.
import typescript from "@rollup/plugin-typescript";

export default {
  input: { "index.node": "ts/index.node.ts", "index.browser": "ts/index.browser.ts" },
  external: [/^node:/],
  output: {
    dir: "dist",
    format: "es",
    chunkFileNames: "[name].js",
    sourcemap: false,
  },
  plugins: [typescript({ tsconfig: "tsconfig.build.json" })],
};
