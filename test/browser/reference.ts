/**
 * A float64 reference for what the browser pages compute, straight from docs/design.md, Semantics
 * (PyTorch's): a training forward with biased batch variance, its backward, the running-statistics
 * update with the unbiased variance, then an inference forward and its backward. NCHW only.
 *
 * Alongside each value it returns a conditioning scale: the same formula evaluated on magnitudes
 * (|x − mean| bounded by max|x| + |mean|), which bounds how much float32 rounding of the inputs
 * to each step can move the result. Tolerances are a few float32 ulps of that scale, so they stay
 * tight where the problem is well conditioned and honest where it is not (a channel whose mean is
 * 1000 times its spread).
 */
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

/** A value with the scale its float32 computation is accurate to (a few ulps of it). */
export interface Reference {
  y: number[];
  dx: number[];
  dWeight: number[];
  dBias: number[];
  runningMean: number[];
  runningVar: number[];
  yEval: number[];
  dxEval: number[];
  /** Per element (or per channel for per-channel values), the magnitude errors scale with. */
  scale: Record<Exclude<keyof Reference, "scale">, number[]>;
}

export function reference(input: ReferenceInput): Reference {
  const { shape, x, dy, x2, weight, bias, eps, momentum, biasedRunningVar = false } = input;
  const [N = 0, C = 0, ...spatial] = shape;
  const inner = spatial.reduce((a, b) => a * b, 1);
  const n = N * inner;
  const channelOf = (i: number) => Math.floor(i / inner) % C;
  const perChannel = (f: (i: number) => number) => {
    const s = new Array<number>(C).fill(0);
    for (let i = 0; i < x.length; i++) {
      const c = channelOf(i);
      s[c] = (s[c] ?? 0) + f(i);
    }
    return s;
  };
  const at = (a: readonly number[], i: number) => a[i] ?? Number.NaN;

  const mean = perChannel((i) => at(x, i)).map((s) => s / n);
  const variance = perChannel((i) => (at(x, i) - at(mean, channelOf(i))) ** 2).map((s) => s / n);
  const invstd = variance.map((v) => 1 / Math.sqrt(v + eps));
  const maxAbs = perChannel(() => 0);
  for (let i = 0; i < x.length; i++) {
    const c = channelOf(i);
    maxAbs[c] = Math.max(at(maxAbs, c), Math.abs(at(x, i)));
  }
  // How far float32 rounding of x and of the mean can move x − mean, relative to the spread.
  const cond = maxAbs.map((m, c) => (m + Math.abs(at(mean, c))) * at(invstd, c));

  const xhat = x.map((v, i) => (v - at(mean, channelOf(i))) * at(invstd, channelOf(i)));
  const y = xhat.map((h, i) => at(weight, channelOf(i)) * h + at(bias, channelOf(i)));
  const dBias = perChannel((i) => at(dy, i));
  const dWeight = perChannel((i) => at(dy, i) * at(xhat, i));
  const dx = x.map((_, i) => {
    const c = channelOf(i);
    return (
      ((at(weight, c) * at(invstd, c)) / n) *
      (n * at(dy, i) - at(dBias, c) - at(xhat, i) * at(dWeight, c))
    );
  });
  const sumAbsDy = perChannel((i) => Math.abs(at(dy, i)));

  const runningMean = mean.map((m) => momentum * m);
  const stored = (v: number) => (biasedRunningVar ? v : (v * n) / (n - 1));
  const runningVar = variance.map((v) => (1 - momentum) * 1 + momentum * stored(v));
  const a = runningVar.map((v, c) => at(weight, c) / Math.sqrt(v + eps));
  const yEval = x2.map((v, i) => {
    const c = channelOf(i);
    return at(a, c) * (v - at(runningMean, c)) + at(bias, c);
  });
  const dxEval = dy.map((g, i) => g * at(a, channelOf(i)));

  const w = (c: number) => Math.abs(at(weight, c));
  return {
    y,
    dx,
    dWeight,
    dBias,
    runningMean,
    runningVar,
    yEval,
    dxEval,
    scale: {
      y: x.map((_, i) => w(channelOf(i)) * at(cond, channelOf(i)) + Math.abs(at(y, i))),
      dx: x.map((_, i) => {
        const c = channelOf(i);
        const spread = (at(cond, c) * at(sumAbsDy, c) * (1 + Math.abs(at(xhat, i)))) / n;
        return w(c) * at(invstd, c) * (Math.abs(at(dy, i)) + spread);
      }),
      dWeight: sumAbsDy.map((s, c) => s * at(cond, c)),
      dBias: sumAbsDy,
      runningMean: maxAbs.map((m) => momentum * m),
      runningVar: runningVar.map((v, c) => v + at(variance, c) * at(cond, c)),
      yEval: x2.map((v, i) => {
        const c = channelOf(i);
        return (
          Math.abs(at(a, c)) * (Math.abs(v) + Math.abs(at(runningMean, c))) + Math.abs(at(bias, c))
        );
      }),
      dxEval: dy.map((g, i) => Math.abs(g * at(a, channelOf(i)))),
    },
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
 * Float32 ulps of each value's conditioning scale (see reference.ts) a back end may be off by.
 * Every back end is within 1 ulp here; 16 leaves room for summation order while staying far
 * below what a wrong convention costs (reference.test.ts checks that it tells them apart).
 */
export const MAX_ULPS = 16;
