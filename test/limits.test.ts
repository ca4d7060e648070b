/**
 * Sizes at the edge of wasm32 memory (4 GiB): every size computed for a module (its per-channel
 * buffers and the kernels' workspace, whose byte count is 32-bit arithmetic inside the build)
 * is checked before anything is allocated. At each boundary a module is refused with a
 * RangeError before memory grows, or made whole and correct, never made smaller than it needs;
 * a module made before keeps its state and results. In a file of its own: a module near the
 * limit grows this process's wasm memory to ~3 GiB for good.
 */
import { beforeAll, describe, expect, it } from "vitest";
import { BatchNorm, memoryBytes } from "../ts/index.node.js";
import { initFromDist } from "./setup-backends.js";
import { expectSameBits, expectSameState, live } from "./state.js";

beforeAll(async () => {
  await initFromDist();
});

const GiB4 = 2 ** 32;
/**
 * Channel counts where a byte count of the old layout wrapped or crossed 4 GiB: 176·C and 88·C
 * (the workspace, 88 bytes a channel, computed in 32 bits) and 24·C (six per-channel arrays),
 * and where this layout's 128 bytes a channel reach 4 GiB; each just below and just above,
 * then the limits of an i32 and a u32.
 */
const BOUNDARIES = [GiB4 / 128, GiB4 / 88, GiB4 / 24]
  .flatMap((c) => [Math.floor(c), Math.ceil(c) + 1])
  .concat([Math.floor(GiB4 / 176), 2 ** 31 - 1, 2 ** 31, GiB4 - 1, GiB4 + 1]);
/** The only ones that fit (128 bytes a channel): about 3.1 GiB. */
const FITS = [Math.floor(GiB4 / 176)];

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
      for (const channels of BOUNDARIES) {
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
        // Made: then with every byte it needs (ten float32 arrays a channel at least), and it works.
        expect(live(kind) - before, `C = ${channels}`).toBeGreaterThanOrEqual(40 * channels);
        checkHugeModule(bn, channels);
        bn.dispose();
        expect(live(kind)).toBe(before);
        made.push(channels);
      }
      expect(made).toEqual(FITS);
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
