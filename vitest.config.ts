import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    exclude: ["**/node_modules/**", "test/browser/fixtures/**"],
    testTimeout: 60_000,
    hookTimeout: 300_000,
    // The wasm builds are loaded once per test file; files run in parallel on the 2 cores.
    pool: "forks",
    // test/lifetime.test.ts forces garbage collection to see dropped modules freed.
    execArgv: ["--expose-gc"],
  },
});
