/**
 * The folds against TF.js (tfjs-core 4.22 ops and a tfjs-layers batchNormalization, CPU back
 * end, float32, channels last): Dense `[in, out]`, Conv2D `[kH, kW, I, O]` and DepthwiseConv2D
 * `[kH, kW, in, M]` kernels followed by the BN layer in inference give what the same op gives
 * with the kernel folded as `"inOut"`, `"HWIO"` and `"HWIM"`. This is where TF's depthwise
 * output channel `i·M + m` is checked against TF itself.
 *
 * Tolerance as in test/fold-onnx.test.ts: (2K + 24)·u·S, K products summed per output.
 */
import * as tf from "@tensorflow/tfjs-core";
import { afterAll, describe, expect, it } from "vitest";
import { type FoldableBatchNorm, foldIntoConv, foldIntoLinear } from "../ts/index.node.js";
import { assertClose } from "./compare.js";
import { type BnParams, bnParams, foldable } from "./peers/data.js";
import { missRatio, U } from "./peers/scales.js";
import { tfjsBatchNorm, tfjsReady } from "./peers/tfjs-layers.js";
import { Rng } from "./random.js";
import { channelOf } from "./reference.js";

const measured: Record<string, number> = {};
afterAll(() => {
  if (process.env.PEERS_REPORT) console.log("fold vs tfjs", measured);
});

const EPS = 1e-3; // Keras's and TF.js's default

/** The layer `op(x, kernel) + bias` in TF.js, as float32 data and shape. */
type Op = (x: tf.Tensor, kernel: tf.Tensor) => tf.Tensor;
function run(
  op: Op,
  x: Float32Array,
  xShape: number[],
  k: ArrayLike<number>,
  kShape: number[],
  bias: ArrayLike<number>,
) {
  return tf.tidy(() => {
    const y = tf.add(
      op(tf.tensor(x, xShape), tf.tensor(Float32Array.from(k), kShape)),
      tf.tensor1d(Float32Array.from(bias)),
    );
    return { data: Float32Array.from(y.dataSync() as Float32Array), shape: y.shape };
  });
}

/** S per output, with Σ|x·kernel| + |b| computed by the same op on absolute values. */
function errorScale(
  op: Op,
  x: Float32Array,
  xShape: number[],
  k: Float32Array,
  kShape: number[],
  b: Float32Array,
  p: BnParams,
) {
  const { data, shape } = run(
    op,
    x.map(Math.abs),
    xShape,
    k.map(Math.abs),
    kShape,
    b.map(Math.abs),
  );
  const chan = channelOf(shape, "NHWC");
  return Float64Array.from(data, (t, i) => {
    const c = chan[i] as number;
    const s = Math.abs(p.weight[c] as number) / Math.sqrt((p.variance[c] as number) + EPS);
    return s * (t + Math.abs(p.mean[c] as number)) + Math.abs(p.bias[c] as number);
  });
}

interface Case {
  name: string;
  layout: "inOut" | "HWIO" | "HWIM";
  op: Op;
  xShape: number[];
  kShape: number[];
  /** Products per output. */
  K: number;
}

const cases: Case[] = [
  {
    name: "Dense [in, out]",
    layout: "inOut",
    op: (x, k) => tf.matMul(x, k),
    xShape: [6, 7],
    kShape: [7, 4],
    K: 7,
  },
  {
    name: "conv2d [kH, kW, I, O]",
    layout: "HWIO",
    op: (x, k) => tf.conv2d(x as tf.Tensor4D, k as tf.Tensor4D, 1, "valid"),
    xShape: [2, 5, 6, 3],
    kShape: [3, 2, 3, 4],
    K: 18,
  },
  {
    name: "depthwiseConv2d [kH, kW, in, M=2]",
    layout: "HWIM",
    op: (x, k) => tf.depthwiseConv2d(x as tf.Tensor4D, k as tf.Tensor4D, 1, "valid"),
    xShape: [2, 5, 4, 3],
    kShape: [2, 3, 3, 2],
    K: 6,
  },
];

describe("folds vs TF.js", () => {
  for (const c of cases) {
    it(`${c.name} → batchNormalization = folded ${c.name}`, async () => {
      await tfjsReady();
      const rng = new Rng(51);
      const O =
        c.layout === "HWIM"
          ? (c.kShape[2] as number) * (c.kShape[3] as number)
          : (c.kShape.at(-1) as number);
      const p = bnParams(rng, O);
      const x = rng.normals(c.xShape.reduce((a, d) => a * d, 1));
      const k = rng.normals(c.kShape.reduce((a, d) => a * d, 1));
      const b = rng.normals(O);
      const z = run(c.op, x, c.xShape, k, c.kShape, b);
      const bn = await tfjsBatchNorm(z.shape, {
        epsilon: EPS,
        weights: { gamma: p.weight, beta: p.bias, movingMean: p.mean, movingVariance: p.variance },
      });
      const want = bn.call(z.data, false);
      bn.dispose();
      const fold = (f: FoldableBatchNorm) =>
        c.layout === "inOut"
          ? foldIntoLinear(f, k, b, { layout: "inOut" })
          : foldIntoConv(f, k, b, { layout: c.layout, shape: c.kShape });
      const f = fold(foldable(p, EPS));
      const got = run(c.op, x, c.xShape, f.weight, c.kShape, f.bias).data;
      const tol = (2 * c.K + 24) * U;
      const scale = errorScale(c.op, x, c.xShape, k, c.kShape, b, p);
      measured[c.name] = assertClose(`folded ${c.name}`, got, want, scale, tol);

      if (c.layout === "HWIM") {
        // Negative control: had TF numbered the depthwise outputs m·in + i instead of i·M + m,
        // the fold would scale channel i·M + m by BN channel m·in + i; that misses.
        const [IN, M] = [c.kShape[2] as number, c.kShape[3] as number];
        const { scale: s, shift: t } = foldable(p, EPS).foldedAffine();
        const other = (o: number) => (o % M) * IN + Math.floor(o / M);
        const swapped = {
          numFeatures: O,
          foldedAffine: () => ({
            scale: Float32Array.from({ length: O }, (_, o) => s[other(o)] as number),
            shift: Float32Array.from({ length: O }, (_, o) => t[other(o)] as number),
          }),
        };
        const wrong = fold(swapped);
        const missed = run(c.op, x, c.xShape, wrong.weight, c.kShape, wrong.bias).data;
        expect(missRatio(missed, want, scale)).toBeGreaterThan(100 * tol);
      }
    });
  }
});
