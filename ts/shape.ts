/**
 * Shapes and layouts: checking a shape and seeing it as `[outer, channels, inner]`.
 *
 * @module
 */
import type { Dims } from "./backend.js";
import { show } from "./errors.js";

/** Where the channel axis is: `[N, C, ...spatial]` or `[N, ...spatial, C]`. 2-D `[N, C]` is both. */
export type Layout = "NCHW" | "NHWC";

export const LAYOUTS: readonly Layout[] = ["NCHW", "NHWC"];

/** Checks a shape's dimensions (positive integers, no holes) and returns the element count. */
export function shapeLength(shape: readonly number[], where: string, name: string): number {
  if (!Array.isArray(shape))
    throw new TypeError(`${where}: ${name} must be an array, got ${show(shape)}`);
  let length = 1;
  // An index loop, not forEach: a sparse array's holes are checked (as undefined) too.
  for (let i = 0; i < shape.length; i++) {
    const d = shape[i];
    if (typeof d !== "number" || !Number.isSafeInteger(d) || d <= 0) {
      throw new RangeError(`${where}: ${name}[${i}] must be a positive integer, got ${show(d)}`);
    }
    length *= d;
  }
  if (!Number.isSafeInteger(length)) {
    throw new RangeError(
      `${where}: ${name} [${shape.join(", ")}] has too many elements (${length})`,
    );
  }
  return length;
}

/**
 * A batch-norm input's shape as `[outer, channels, inner]` (rank ≥ 2). With `channels`, the
 * channel count must be that.
 */
export function dimsOf(
  shape: readonly number[],
  layout: Layout,
  where: string,
  name: string,
  channels?: number,
): Dims {
  shapeLength(shape, where, name);
  if (shape.length < 2) {
    throw new RangeError(
      `${where}: ${name} must have at least 2 dimensions ([N, C, ...]), got [${shape.join(", ")}]`,
    );
  }
  const channelAxis = layout === "NCHW" ? 1 : shape.length - 1;
  const c = shape[channelAxis] as number;
  if (channels !== undefined && c !== channels) {
    throw new RangeError(
      `${where}: ${name}[${channelAxis}] is the channel count (${layout}) and must be ` +
        `numFeatures = ${channels}, got ${c}`,
    );
  }
  let outer = 1;
  let inner = 1;
  if (layout === "NCHW") {
    outer = shape[0] as number;
    for (let i = 2; i < shape.length; i++) inner *= shape[i] as number;
  } else {
    for (let i = 0; i < shape.length - 1; i++) outer *= shape[i] as number;
  }
  return { outer, channels: c, inner };
}

export function sameShape(
  got: readonly number[],
  want: readonly number[],
  where: string,
  name: string,
): void {
  let same = got.length === want.length;
  // A plain loop: this runs on every zero-copy call.
  for (let i = 0; same && i < got.length; i++) same = got[i] === want[i];
  if (!same) {
    throw new RangeError(
      `${where}: ${name} must have shape [${want.join(", ")}], got [${got.join(", ")}]`,
    );
  }
}
