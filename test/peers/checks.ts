/**
 * Checks of a peer's output shared by the peer suites, each with its negative control.
 *
 * @module
 */
import { expect } from "vitest";
import { assertClose } from "../compare.js";
import { channelOf, normalize, type RefLayout } from "../reference.js";
import { unbiased } from "./formulas.js";
import { missRatio, Y_TOL, yScale } from "./scales.js";

/**
 * A peer's training-mode y against the formula with the batch's own mean and biased variance
 * (the batch statistics carry the sum's n·u error into y: `tol` is a statistic's tolerance,
 * Y_TOL is added), and, as the negative control, not with the unbiased variance. Returns the
 * measured error.
 */
export function checkTrainingY(
  y: ArrayLike<number>,
  x: ArrayLike<number>,
  shape: readonly number[],
  layout: RefLayout,
  p: { weight: ArrayLike<number>; bias: ArrayLike<number> },
  batch: { mean: ArrayLike<number>; variance: ArrayLike<number>; count: number },
  eps: number,
  tol: number,
): number {
  const chan = channelOf(shape, layout);
  const { mean, variance, count } = batch;
  const scales = yScale(x, shape, layout, { ...p, mean }, variance, eps);
  const want = normalize(x, chan, mean, variance, eps, p.weight, p.bias);
  const measured = assertClose("y", y, want, scales, tol + Y_TOL);
  const wrong = normalize(x, chan, mean, unbiased(variance, count), eps, p.weight, p.bias);
  expect(missRatio(y, wrong, scales)).toBeGreaterThan(100 * (tol + Y_TOL));
  return measured;
}
