/**
 * What the browser pages compute, by the project's float64 reference (test/reference.ts), with
 * the error scale of every value: the page (fixtures/shared/app.js) loads the weight and bias
 * with fresh running statistics, runs a training forward and its backward (the running
 * statistics updated), then an inference forward and its backward. NCHW only.
 *
 * The scales follow test/compare.ts's rule (`errorScales`, `runningScales`): a few float32 ulps
 * of the magnitudes each computation adds up, so tolerances stay tight where the problem is well
 * conditioned and honest where it is not (a channel whose mean is 1000 times its spread). For
 * y, dx, runningMean and yEval this suite had tighter per-element bounds (`elementBounds`); the
 * smaller of the two is used, so that sharing the rule loosened no check.
 */
import { errorScales, maxAbsPerChannel, runningScales } from "../compare.js";
import { channelOf, RefBatchNorm } from "../reference.js";

export interface ReferenceInput {
  shape: readonly number[];
  x: readonly number[];
  dy: readonly number[];
  x2: readonly number[];
  weight: readonly number[];
  bias: readonly number[];
  eps: number;
  momentum: number;
  /** Store the biased batch variance in the running variance (a convention bug, for tests). */
  biasedRunningVar?: boolean;
}

type Key = "y" | "dx" | "dWeight" | "dBias" | "runningMean" | "runningVar" | "yEval" | "dxEval";
type Values = Record<Key, number[]>;

/** The values the page reports, with the scale their float32 computation is accurate to. */
export interface Reference extends Values {
  /** Per element (or per channel for per-channel values), the magnitude errors scale with. */
  scale: Values;
}

export function reference(input: ReferenceInput): Reference {
  const { shape, x, dy, x2, weight, bias, eps, momentum, biasedRunningVar = false } = input;
  const C = shape[1] ?? 0;
  const chan = channelOf(shape, "NCHW");
  const ref = new RefBatchNorm(C, { eps, momentum });
  ref.weight?.set(weight);
  ref.bias?.set(bias);
  const y = ref.forward(x, shape);
  const mean = ref.lastMean as Float64Array;
  const variance = ref.lastVar as Float64Array;
  const g = ref.backward(dy);
  const rm = ref.runningMean as Float64Array;
  const rv = ref.runningVar as Float64Array;
  if (biasedRunningVar) {
    for (let c = 0; c < C; c++) rv[c] = 1 - momentum + momentum * (variance[c] as number);
  }
  const train = errorScales(
    x,
    dy,
    { chan, mean, variance, eps, weight: ref.weight, bias: ref.bias },
    true,
  );
  const running = runningScales(rm, rv);
  const values: Values = {
    y: [...y],
    dx: [...g.dx],
    dWeight: [...g.dWeight],
    dBias: [...g.dBias],
    runningMean: [...rm],
    runningVar: [...rv],
    yEval: [],
    dxEval: [],
  };
  ref.eval();
  values.yEval = [...ref.forward(x2, shape)];
  values.dxEval = [...ref.backward(dy).dx];
  const infer = errorScales(
    x2,
    dy,
    { chan, mean: rm, variance: rv, eps, weight: ref.weight, bias: ref.bias },
    false,
  );
  const rule: Values = {
    y: [...train.y],
    dx: [...train.dx],
    dWeight: [...train.dWeight],
    dBias: [...train.dBias],
    runningMean: [...running.runningMean],
    runningVar: [...running.runningVar],
    yEval: [...infer.y],
    dxEval: [...infer.dx],
  };
  const bound = elementBounds(input, values, chan, mean, variance);
  const scale = { ...rule };
  for (const k of ["y", "dx", "runningMean", "yEval"] as const) {
    scale[k] = rule[k].map((s, i) => Math.min(s, bound[k][i] as number));
  }
  return { ...values, scale };
}

/**
 * The bounds this suite used before it shared test/compare.ts's rule, where they are the tighter:
 * the rule's terms, but per element where the rule takes a channel's maximum, with
 * cond = (max|x| + |μ|)/σ̂ (how far float32 rounding of x and of the mean can move x − μ,
 * relative to the spread) and a = |γ|/√(running var + ε) for inference.
 */
function elementBounds(
  input: ReferenceInput,
  v: Values,
  chan: Int32Array,
  mean: Float64Array,
  variance: Float64Array,
): Pick<Values, "y" | "dx" | "runningMean" | "yEval"> {
  const { x, dy, x2, weight, bias, eps, momentum } = input;
  const C = mean.length;
  const n = x.length / C;
  const invstd = Float64Array.from(variance, (s) => 1 / Math.sqrt(s + eps));
  const maxAbs = maxAbsPerChannel(x, chan, C);
  const sumAbsDy = new Float64Array(C);
  for (let i = 0; i < x.length; i++) {
    const c = chan[i] as number;
    sumAbsDy[c] = (sumAbsDy[c] as number) + Math.abs(dy[i] as number);
  }
  const cond = maxAbs.map((m, c) => (m + Math.abs(mean[c] as number)) * (invstd[c] as number));
  const w = (c: number) => Math.abs(weight[c] as number);
  const a = v.runningVar.map((s, c) => w(c) / Math.sqrt(s + eps));
  return {
    y: x.map((_, i) => {
      const c = chan[i] as number;
      return w(c) * (cond[c] as number) + Math.abs(v.y[i] as number);
    }),
    dx: x.map((xi, i) => {
      const c = chan[i] as number;
      const xhat = Math.abs(xi - (mean[c] as number)) * (invstd[c] as number);
      const spread = ((cond[c] as number) * (sumAbsDy[c] as number) * (1 + xhat)) / n;
      return w(c) * (invstd[c] as number) * (Math.abs(dy[i] as number) + spread);
    }),
    runningMean: [...maxAbs].map((m) => momentum * m),
    yEval: x2.map((s, i) => {
      const c = chan[i] as number;
      const rm = Math.abs(v.runningMean[c] as number);
      return (a[c] as number) * (Math.abs(s) + rm) + Math.abs(bias[c] as number);
    }),
  };
}

/**
 * The largest |got − want| / scale over all elements, in float32 ulps (2^-23): how many float32
 * roundings of the conditioning scale the result is off by.
 */
export function ulpsOff(got: readonly number[], want: readonly number[], scale: readonly number[]) {
  if (got.length !== want.length) return Number.POSITIVE_INFINITY;
  let worst = 0;
  for (let i = 0; i < want.length; i++) {
    const err = Math.abs((got[i] ?? Number.NaN) - (want[i] ?? Number.NaN));
    const s = Math.max(scale[i] ?? 0, Number.MIN_VALUE);
    const u = err / (s * 2 ** -23);
    worst = Number.isNaN(u) ? Number.POSITIVE_INFINITY : Math.max(worst, u);
  }
  return worst;
}

/**
 * Float32 ulps of each value's scale a back end may be off by. Every back end is within 1 ulp
 * here; 16 leaves room for summation order while staying far below what a wrong convention
 * costs (reference.test.ts checks that it tells them apart).
 */
export const MAX_ULPS = 16;
