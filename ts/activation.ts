/**
 * Fused activations: `act(z)` applied to the normalized `z = (x − center)·scale + shift` in the
 * same pass over memory as the normalization. Backward needs no mask: the two backward passes
 * recompute `z` from `x` and the forward's coefficients and use `g = dy·act′(z)` for `dy`
 * (or the first writes `g` into dx's memory for the second: {@link Fused.gradOut}).
 *
 * @module
 */
import type { F32Buffer } from "./backend.js";
import { checkChoice, show } from "./errors.js";

/** An activation fused after batch norm (PyTorch's names, camel-cased). */
export type Activation = "relu" | "relu6" | "leakyRelu" | "sigmoid" | "tanh" | "silu";

export const ACTIVATIONS: readonly Activation[] = [
  "relu",
  "relu6",
  "leakyRelu",
  "sigmoid",
  "tanh",
  "silu",
];

/** The number the wasm ABI knows each activation by (0 is none). */
export const ACTIVATION_CODES: Readonly<Record<Activation, number>> = {
  relu: 1,
  relu6: 2,
  leakyRelu: 3,
  sigmoid: 4,
  tanh: 5,
  silu: 6,
};

/** A checked activation: which, and the slope of `leakyRelu` for z < 0. */
export interface Act {
  readonly kind: Activation;
  readonly negativeSlope: number;
}

/** The forward's coefficients, for backward passes that recompute the pre-activation. */
export interface Fused {
  readonly act: Act;
  /** `z = (x − mean)·scale + shift`, with the `mean` (centre) the pass is given. */
  readonly scale: F32Buffer;
  readonly shift: F32Buffer;
  /**
   * For `gradSums` only: where it may write `g` (as many floats as `x`), saying so by
   * returning `"g"`, so that `act′` is evaluated once, not in both passes. The wasm builds do
   * where `Backend.writesGradient` says and no sign thresholds apply; never into a buffer that
   * overlaps `x` or `dy`.
   */
  readonly gradOut?: F32Buffer | null;
  /**
   * For `gradInput` only: true where `gradSums` with the same tensors, `mean`, `scale`,
   * `shift` and `ws` returned true, nothing having used `ws` since. The pass then takes what
   * `gradSums` left in `ws` (the wasm builds' sign thresholds of relu and leakyRelu) instead of
   * finding it again.
   */
  readonly thresholdsReady?: boolean;
}

/**
 * `options.activation` (absent or `null`: none) and `options.negativeSlope` (default 0.01, a
 * finite number), checked; RangeError naming the option otherwise.
 */
export function checkActivation(
  activation: unknown,
  negativeSlope: unknown,
  where: string,
): Act | null {
  const slope = negativeSlope ?? 0.01;
  if (typeof slope !== "number" || !Number.isFinite(slope)) {
    throw new RangeError(
      `${where}: options.negativeSlope must be a finite number, got ${show(negativeSlope)}`,
    );
  }
  if (activation == null) return null;
  const kind = checkChoice(activation, ACTIVATIONS, where, "options.activation");
  return { kind, negativeSlope: slope };
}

/** `act(z)` in float64 (the JS back end and the tests' reference). */
export function activate(act: Act, z: number): number {
  switch (act.kind) {
    // The kernels' selects, not Math.max/min: NaN stays NaN, −0 stays −0, on every back end.
    case "relu":
      // biome-ignore lint/complexity/useMathMinMax: the kernels' select (see above)
      return z < 0 ? 0 : z;
    case "relu6":
      // biome-ignore lint/complexity/useMathMinMax: the kernels' select (see above)
      return z < 0 ? 0 : z > 6 ? 6 : z;
    case "leakyRelu":
      return z > 0 ? z : z * act.negativeSlope;
    case "sigmoid":
      return 1 / (1 + Math.exp(-z));
    case "tanh":
      return Math.tanh(z);
    case "silu":
      return z / (1 + Math.exp(-z));
  }
}

/**
 * `act′(z)` in float64 (PyTorch's at the kinks: relu′(0) = 0, relu6′(0) = relu6′(6) = 0,
 * leakyRelu′(0) = negativeSlope).
 */
export function derivative(act: Act, z: number): number {
  switch (act.kind) {
    case "relu":
      return z > 0 ? 1 : 0;
    case "relu6":
      return z > 0 && z < 6 ? 1 : 0;
    case "leakyRelu":
      return z > 0 ? 1 : act.negativeSlope;
    case "sigmoid": {
      const s = 1 / (1 + Math.exp(-z));
      return s * (1 - s);
    }
    case "tanh": {
      const t = Math.tanh(z);
      return 1 - t * t;
    }
    case "silu": {
      const s = 1 / (1 + Math.exp(-z));
      return s * (1 + z * (1 - s));
    }
  }
}
