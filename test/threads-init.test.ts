/**
 * `init({ threads })` end to end, each case in a child process of its own (a fresh registry
 * and environment, see threads-child.ts): a BatchNorm module's training forward, backward and
 * inference give the same bits with 2, 3 and 4 threads in both layouts, close to one thread's;
 * where threads cannot run (no SharedArrayBuffer, a page that is not cross-origin isolated, a
 * thread that may not block) init() runs single-threaded and says why, and `requireThreads`
 * makes it reject with a clear error. Every child has a timeout, so no case can hang.
 */
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { init } from "../ts/index.node.js";

const run = promisify(execFile);
const CHILD = fileURLToPath(new URL("./threads-child.ts", import.meta.url));

interface ChildOutput {
  result?: { backend: string; threads?: number; threadsReason?: string };
  error?: string;
  outputs?: Record<string, string>;
}

async function child(args: object): Promise<ChildOutput> {
  const { stdout } = await run(process.execPath, ["--import", "tsx", CHILD, JSON.stringify(args)], {
    timeout: 60_000,
    maxBuffer: 64 * 1024 * 1024,
  });
  return JSON.parse(stdout.trim().split("\n").pop() as string) as ChildOutput;
}

const floats = (b64: string) => {
  const bytes = Buffer.from(b64, "base64");
  return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
};

describe("init({ threads })", () => {
  it("a module gives the same bits with 2, 3 and 4 threads, close to one thread's", async () => {
    const runs = await Promise.all([1, 2, 3, 4].map((threads) => child({ threads, run: true })));
    for (const [k, r] of runs.entries()) {
      expect(r.error).toBeUndefined();
      expect(r.result?.threads).toBe(k + 1);
      expect(r.result?.threadsReason).toBeUndefined();
    }
    const [one, ...many] = runs as [ChildOutput, ...ChildOutput[]];
    const keys = Object.keys(one.outputs ?? {});
    expect(keys.length).toBe(12);
    for (const r of many) expect(r.outputs).toEqual(many[0]?.outputs);
    for (const key of keys) {
      const a = floats(many[0]?.outputs?.[key] as string);
      const b = floats(one.outputs?.[key] as string);
      let worst = 0;
      let scale = 0;
      for (let i = 0; i < b.length; i++) {
        worst = Math.max(worst, Math.abs((a[i] as number) - (b[i] as number)));
        scale = Math.max(scale, Math.abs(b[i] as number));
      }
      // Σ over 32768 values per channel: float32 rounding of sums cut at other places.
      const tolerance = /dWeight|dBias/.test(key) ? 1e-4 : 1e-5;
      expect(worst, key).toBeLessThanOrEqual(tolerance * scale);
    }
  });

  it('"auto" takes the available cores', async () => {
    const { availableParallelism } = await import("node:os");
    const r = await child({ threads: "auto" });
    expect(r.result?.threads).toBe(availableParallelism());
  });

  it.each([
    ["SharedArrayBuffer", /no SharedArrayBuffer/],
    ["crossOriginIsolated", /not cross-origin isolated .*Cross-Origin-Opener-Policy: same-origin/],
    ["Atomics.wait", /may not block in Atomics\.wait .*run wasm-batchnorm in a worker/],
  ])("without %s: runs on one thread and says why; requireThreads rejects", async (hide, why) => {
    const soft = await child({ threads: 2, hide });
    expect(soft.error).toBeUndefined();
    expect(soft.result?.backend).toBe("simd");
    expect(soft.result?.threads).toBe(1);
    expect(soft.result?.threadsReason).toMatch(why);
    const strict = await child({ threads: 2, hide, requireThreads: true });
    expect(strict.result).toBeUndefined();
    expect(strict.error).toMatch(/^init: 2 threads were required, but threads cannot run here: /);
    expect(strict.error).toMatch(why);
  });

  it("checks the option before loading anything", async () => {
    await expect(init({ threads: 0 })).rejects.toThrow(RangeError);
    await expect(init({ threads: 2.5 })).rejects.toThrow(/whole number from 1 to 256/);
    await expect(init({ threads: "all" as never })).rejects.toThrow(TypeError);
    await expect(init({ threads: 2, requireThreads: "yes" as never })).rejects.toThrow(TypeError);
  });
});
