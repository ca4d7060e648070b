/**
 * Non-finite input in every statistics block: NaN, +Infinity and −Infinity must propagate the
 * same way on every back end, whichever block of a channel they fall in.
 *
 * ## PyTorch's behaviour, which every back end must follow
 * In a training forward, a channel's batch mean is Σx/n and its variance Σ(x − mean)²/n:
 * - a NaN anywhere in the channel makes both NaN;
 * - an infinity makes the variance NaN (x − mean is ∞ − ∞ at the infinity itself), and the
 *   mean +∞ or −∞ (its sign) when the sum is taken directly, as PyTorch's CPU kernels do, or
 *   NaN where it is accumulated as a running mean (Welford, as in its CUDA kernels, or here a
 *   shift taken from the data: ∞ − ∞). So the mean is NaN or an infinity of the same sign;
 *   never finite, never the other sign.
 * - Either way every y of that channel is NaN (its scale 1/√(var + ε) is NaN), and its running
 *   mean and running variance become non-finite (the variance NaN); other channels are
 *   untouched.
 *
 * ## Where the value goes
 * The kernels accumulate statistics in blocks (see crates/batchnorm/src/kernels.rs): runs of up
 * to BLOCK = 4096 floats of one channel when channels come first, bands of whole rows (or whole
 * planes, when runs are short) merged per channel with Chan's update. Each shape below gives a
 * channel several blocks, and the bad value goes into the first, a middle and the last of them
 * (the wasm builds once turned the NaN M2 of a block into 0 with max(0, ·), so an infinity in
 * a channel's last block gave a variance of +∞ instead of NaN). Every back end is compared with
 * the rule above, with the JS back end (same NaN pattern of y, non-finite statistics in the
 * same place, the clean channels close), and with a float64 reference on the clean channels.
 */
import { beforeAll, describe, expect, it } from "vitest";
import { BatchNorm } from "../ts/index.node.js";
import { assertClose, trainingReference } from "./compare.js";
import { Rng } from "./random.js";
import { channelOf, nth, type RefLayout } from "./reference.js";
import { BACKENDS, initFromDist } from "./setup-backends.js";

/** For the clean channels: the conformance suite's tolerance. */
const TOL = 1e-5;
const POISONED = 1;

interface Case {
  layout: RefLayout;
  shape: number[];
  /** Where the blocks of a channel come from, for the test's name. */
  blocks: string;
}

const CASES: Case[] = [
  { layout: "NCHW", shape: [3, 3, 5000], blocks: "runs of 5000: 2 blocks a run, 6 a channel" },
  { layout: "NCHW", shape: [64, 3, 100], blocks: "runs of 100: bands of planes" },
  { layout: "NCHW", shape: [2500, 3, 4], blocks: "runs of 4: bands of planes as rows" },
  { layout: "NCHW", shape: [500, 2, 9, 3], blocks: "runs of 27, C = 2" },
  { layout: "NCHW", shape: [9000, 3], blocks: "2-D: bands of rows" },
  { layout: "NHWC", shape: [2, 6000, 3], blocks: "C = 3: bands of 4096 rows" },
  { layout: "NHWC", shape: [2, 3000, 64], blocks: "C = 64: bands of 2048 rows" },
];

const WHERE = ["first", "middle", "last"] as const;
const BAD = [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY];

interface Result {
  y: Float32Array;
  mean: Float32Array;
  variance: Float32Array;
}

/** One training forward with momentum 1, so the running statistics are the batch's. */
function run(backend: (typeof BACKENDS)[number], c: Case, x: Float32Array): Result {
  const C = c.layout === "NCHW" ? (c.shape[1] as number) : (c.shape.at(-1) as number);
  const bn = new BatchNorm(C, { backend, layout: c.layout, momentum: 1 });
  try {
    const y = bn.forward(x, c.shape);
    return {
      y: Float32Array.from(y),
      mean: Float32Array.from(bn.runningMean as Float32Array),
      variance: Float32Array.from(bn.runningVar as Float32Array),
    };
  } finally {
    bn.dispose();
  }
}

beforeAll(async () => {
  await initFromDist();
});

for (const c of CASES) {
  const C = c.layout === "NCHW" ? (c.shape[1] as number) : (c.shape.at(-1) as number);
  const chan = channelOf(c.shape, c.layout);
  const perChannel = chan.length / C;
  const rng = new Rng(11);
  const clean = Float32Array.from(chan, (ch) => ch - 1 + (1 + ch) * rng.normal());
  const at: Record<(typeof WHERE)[number], number> = {
    first: nth(chan, POISONED, 1),
    middle: nth(chan, POISONED, Math.floor(perChannel / 2)),
    last: nth(chan, POISONED, perChannel - 2),
  };

  describe(`${c.layout} [${c.shape.join(", ")}] (${c.blocks})`, () => {
    for (const where of WHERE) {
      for (const bad of BAD) {
        describe(`${bad} in the ${where} block of channel ${POISONED}`, () => {
          const x = clean.slice();
          x[at[where]] = bad;
          let js: Result | undefined;
          const jsResult = () => {
            js ??= run("js", c, x);
            return js;
          };

          it.each(BACKENDS)("%s back end", (backend) => {
            const got = run(backend, c, x);
            const want = jsResult();
            // The rule: the poisoned channel's variance is NaN, its mean NaN (for a NaN) or
            // NaN or the infinity itself, every y of it NaN; the other channels finite.
            for (const r of [got, want]) {
              expect(r.variance[POISONED], "runningVar of the poisoned channel").toBeNaN();
              const m = r.mean[POISONED] as number;
              if (Number.isNaN(bad)) expect(m, "runningMean of the poisoned channel").toBeNaN();
              else expect(Number.isNaN(m) || m === bad, `runningMean ${m} for ${bad}`).toBe(true);
            }
            for (let ch = 0; ch < C; ch++) {
              if (ch === POISONED) continue;
              expect(Number.isFinite(got.mean[ch]), `mean of channel ${ch}`).toBe(true);
              expect(Number.isFinite(got.variance[ch]), `variance of channel ${ch}`).toBe(true);
            }
            let poisonedFinite = 0;
            let cleanNonFinite = 0;
            for (let i = 0; i < got.y.length; i++) {
              const v = got.y[i] as number;
              if (chan[i] === POISONED) poisonedFinite += Number.isNaN(v) ? 0 : 1;
              else cleanNonFinite += Number.isFinite(v) ? 0 : 1;
            }
            expect(poisonedFinite, "y of the poisoned channel that is not NaN").toBe(0);
            expect(cleanNonFinite, "y of the clean channels that is not finite").toBe(0);

            // The clean channels: close to the JS back end's and to the float64 reference.
            const { stats: s, y: yRef, scale } = trainingReference(x, chan, C);
            const keep = (a: ArrayLike<number>) =>
              Array.from(a).filter((_, i) => chan[i] !== POISONED);
            assertClose("clean y against the reference", keep(got.y), keep(yRef), keep(scale), TOL);
            assertClose("clean y against JS", keep(got.y), keep(want.y), keep(scale), 2 * TOL);
            const n = perChannel;
            for (let ch = 0; ch < C; ch++) {
              if (ch === POISONED) continue;
              const mu = s.mean[ch] as number;
              const v = s.variance[ch] as number;
              const sd = Math.sqrt(v);
              expect(Math.abs((got.mean[ch] as number) - mu), `mean ${ch}`).toBeLessThan(TOL * sd);
              const unbiased = (v * n) / (n - 1);
              expect(
                Math.abs((got.variance[ch] as number) - unbiased) / unbiased,
                `variance ${ch}`,
              ).toBeLessThan(TOL);
            }
          });
        });
      }
    }
  });
}

// Finite values too large for a float32 sum of a few of them (f32 max is 3.4e38): a channel
// holding one such value everywhere has that mean and a variance of 0, so y = 0 (PyTorch's,
// and the JS back end's float64 sums). The wasm builds' first shift, a float32 mean of
// sampled values (or of the whole block), overflowed to ±∞ there and made every statistic
// and every y of the channel NaN; it now falls back to one of the block's values.
describe("a constant channel of values too large for a float32 sum", () => {
  for (const c of CASES) {
    const chan = channelOf(c.shape, c.layout);
    for (const value of [6e36, 1e38, -3e38, 3.4028234663852886e38].map(Math.fround)) {
      const x = Float32Array.from(chan, (ch) => (ch === POISONED ? value : ch + Math.sin(ch)));
      it.each(BACKENDS)(`${c.layout} [${c.shape.join(", ")}], ${value}: %s back end`, (backend) => {
        const got = run(backend, c, x);
        expect(got.mean[POISONED], "runningMean").toBe(value);
        expect(got.variance[POISONED], "runningVar").toBe(0);
        const wrong = got.y.findIndex((v, i) => chan[i] === POISONED && v !== 0);
        expect(wrong, `y[${wrong}] = ${got.y[wrong]}`).toBe(-1);
      });
    }
  }
});
