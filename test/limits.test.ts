/**
 * Sizes at the edge of wasm32 memory (4 GiB): every size computed for a module (its per-channel
 * buffers and the kernels' workspace, whose byte count is 32-bit arithmetic inside the build)
 * is checked before anything is allocated. At each boundary a module is refused with a
 * RangeError before memory grows, or made whole and correct, never made smaller than it needs;
 * a module made before keeps its state and results. In a file of its own: the module of 3 GiB
 * grows this process's wasm memory for good.
 */
import { beforeAll, describe, expect, it } from "vitest";
import { BatchNorm, memoryBytes } from "../ts/index.node.js";
import { resolveBackend } from "../ts/init.js";
import { initFromDist } from "./setup-backends.js";
import { expectSameBits, expectSameState, live } from "./state.js";

beforeAll(async () => {
  await initFromDist();
});

const GiB4 = 2 ** 32;
/**
 * Bytes a module takes per channel in wasm memory: ten float32 arrays, four more for the cache
 * of its inference coefficients (weight and running variance, now and then), on the SIMD build
 * six more where its per-channel math reads and writes (ts/scratch.ts's stage), and the
 * kernels' workspace, which grows linearly past a few channels (412 bytes a channel).
 */
function perChannelBytes(kind: "simd" | "scalar"): number {
  const ws = (c: number) => resolveBackend(kind).workspaceFloats(c);
  const arrays = 14 + (kind === "simd" ? 6 : 0);
  return 4 * (arrays + (ws(2 ** 20) - ws(2 ** 19)) / 2 ** 19);
}

/**
 * Channel counts where a byte count wraps 32 bits or crosses 4 GiB: 88·C, 176·C and 280·C
 * (older workspaces, computed in 32 bits), 408·C (the previous workspace), 24·C (six
 * per-channel arrays), 412·C (this workspace alone) and this layout's whole per-channel size,
 * each just below and just above; then the limits of an i32 and a u32; and one module of about
 * 3 GiB, which fits.
 */
function boundaries(kind: "simd" | "scalar"): { all: number[]; fits: number } {
  const fits = Math.floor((0.75 * GiB4) / perChannelBytes(kind));
  const all = [
    GiB4 / perChannelBytes(kind),
    GiB4 / 412,
    GiB4 / 408,
    GiB4 / 280,
    GiB4 / 176,
    GiB4 / 88,
    GiB4 / 24,
  ]
    .flatMap((c) => [Math.floor(c), Math.ceil(c) + 1])
    .filter((c) => c * perChannelBytes(kind) > GiB4)
    .concat([fits, 2 ** 31 - 1, 2 ** 31, GiB4 - 1, GiB4 + 1]);
  return { all, fits };
}

describe.each(["simd", "scalar"] as const)(
  "the %s back end at the edge of wasm32 memory",
  (kind) => {
    it("refuses each module that cannot fit before growing memory, and keeps the others' state", () => {
      const earlier = new BatchNorm(5, { backend: kind });
      const twin = new BatchNorm(5, { backend: kind });
      const x = Float32Array.from({ length: 20 }, (_, i) => Math.cos(i) * 3);
      earlier.forward(x, [4, 5]);
      twin.forward(x, [4, 5]);
      const made: number[] = [];
      const { all, fits } = boundaries(kind);
      for (const channels of all) {
        const memory = memoryBytes(kind);
        const before = live(kind);
        let bn: BatchNorm;
        try {
          bn = new BatchNorm(channels, { backend: kind });
        } catch (error) {
          expect(error, `C = ${channels}`).toBeInstanceOf(RangeError);
          expect((error as Error).message).toMatch(
            new RegExp(
              `new BatchNorm: numFeatures = ${channels} is too large: its per-channel arrays need .* of wasm memory`,
            ),
          );
          expect(memoryBytes(kind), `C = ${channels}: memory grew`).toBe(memory);
          expect(live(kind)).toBe(before);
          continue;
        }
        // Made: then with every byte it needs (fourteen float32 arrays a channel at least), and it works.
        expect(live(kind) - before, `C = ${channels}`).toBeGreaterThanOrEqual(56 * channels);
        checkHugeModule(bn, channels);
        bn.dispose();
        expect(live(kind)).toBe(before);
        made.push(channels);
      }
      expect(made).toEqual([fits]);
      // The module made before is untouched and still gives its twin's results.
      expectSameState(earlier, twin);
      expectSameBits("y after", earlier.forward(x, [4, 5]), twin.forward(x, [4, 5]));
      earlier.dispose();
      twin.dispose();
    });
  },
);

/** An inference forward of one row on a module of `channels` channels, spot-checked. */
function checkHugeModule(bn: BatchNorm, channels: number): void {
  bn.eval();
  (bn.runningMean as Float32Array).fill(2);
  (bn.runningVar as Float32Array).fill(4);
  const x = bn.tensor([1, channels]);
  x.data.fill(6);
  x.data[channels - 1] = -2;
  const y = bn.forward(x);
  // (6 − 2)/sqrt(4 + 1e-5) and (−2 − 2)/sqrt(4 + 1e-5), rounded to float32.
  expectSameBits(
    "y",
    [y.data[0] as number, y.data[channels - 1] as number],
    [Math.fround(4 / Math.sqrt(4 + 1e-5)), Math.fround(-4 / Math.sqrt(4 + 1e-5))],
  );
  x.dispose();
  y.dispose();
}
