/**
 * Everything the benchmark takes from the package, in one place: the public API and the few
 * internals it reaches past it for (a back end by name, for the copy yardstick; the JS back
 * end's kernels, for `js-kernels.ts`). When the
 * package's modules move, repoint the paths here.
 *
 * @module
 */
import type { F32Buffer } from "../ts/backend.js";
import { resolveBackend } from "../ts/init.js";

export type { Backend, Dims, F32Buffer } from "../ts/backend.js";
export { jsBackend } from "../ts/backend-js.js";
export { BatchNorm, init, type Layout, type StateDict } from "../ts/index.node.js";
export { resolveBackend } from "../ts/init.js";

/**
 * The copy yardstick's source (holding `values`) and destination in the SIMD build's memory,
 * each on a 64-byte boundary (a cache line): the yardstick is the fastest copy, and a wasm SIMD
 * copy between buffers 16–48 bytes off a line ran 1.6× slower in the cache (60 000 floats: 8.3
 * µs against 5.3; the kernels do not care). The source is written: untouched wasm memory reads
 * as the zero page, faster than real memory (4.6 µs there).
 */
export function copyBuffers(values: Float32Array): {
  src: F32Buffer;
  dst: F32Buffer;
  free(): void;
} {
  const be = resolveBackend("simd");
  // A copy first: `values` may be a view of the memory that these allocations grow (detaching it).
  const data = values.slice();
  const pads: F32Buffer[] = [];
  const lineAligned = (): F32Buffer => {
    // A pad of the offset's complement moves the next first-fit block onto the line.
    for (let tries = 0; tries < 16; tries++) {
      const b = be.alloc(data.length);
      const off = b.view().byteOffset % 64;
      if (off === 0) return b;
      b.free();
      pads.push(be.alloc((64 - off) / 4));
    }
    for (const b of pads) b.free();
    throw new Error("bench: no 64-byte aligned block for the copy yardstick");
  };
  const src = lineAligned();
  const dst = lineAligned();
  src.view().set(data);
  return {
    src,
    dst,
    free() {
      for (const b of [src, dst, ...pads]) b.free();
    },
  };
}
