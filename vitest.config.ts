import { defineConfig } from "vitest/config";

/** The suites that run over every back end: the "threads" project runs them threaded too. */
const CONFORMANCE = [
  "test/conformance.test.ts",
  "test/functional.test.ts",
  "test/activation.test.ts",
  "test/activation-nonfinite.test.ts",
];

export default defineConfig({
  test: {
    testTimeout: 60_000,
    hookTimeout: 300_000,
    // The wasm builds are loaded once per test file; files run in parallel on the 2 cores.
    pool: "forks",
    // test/lifetime.test.ts forces garbage collection to see dropped modules freed.
    execArgv: ["--expose-gc"],
    projects: [
      {
        extends: true,
        test: {
          name: "node",
          include: ["test/**/*.test.ts"],
          exclude: ["**/node_modules/**", "test/browser/fixtures/**"],
        },
      },
      {
        // The conformance suites over the threaded back end (see test/setup-backends.ts).
        extends: true,
        test: {
          name: "threads",
          include: CONFORMANCE,
          env: { WASM_BATCHNORM_TEST_THREADS: "3" },
          setupFiles: ["test/setup-threads.ts"],
        },
      },
    ],
  },
});
