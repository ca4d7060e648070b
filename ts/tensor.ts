/**
 * Tensors that live in a back end's memory, for the zero-copy path.
 *
 * @module
 */
import type { Backend, F32Buffer } from "./backend.js";

const disposeSymbol: typeof Symbol.dispose =
  (Symbol as { dispose?: typeof Symbol.dispose }).dispose ??
  (Symbol.for("Symbol.dispose") as typeof Symbol.dispose);

/**
 * A float32 tensor in the memory of one back end (for wasm: the instance's linear memory), made
 * by {@link BatchNorm.tensor} and read and written in place through {@link Tensor.data}. It is
 * freed by {@link Tensor.dispose} (or `using`), never by the garbage collector.
 */
export class Tensor {
  /** The dimensions, e.g. `[N, C, H, W]`. */
  readonly shape: readonly number[];
  /** @internal */
  readonly backend: Backend;
  #buffer: F32Buffer | undefined;

  /** @internal Use {@link BatchNorm.tensor}. */
  constructor(backend: Backend, shape: readonly number[], buffer: F32Buffer) {
    this.backend = backend;
    this.shape = Object.freeze([...shape]);
    this.#buffer = buffer;
  }

  /**
   * The values, as a `Float32Array` view of the tensor's memory: no copy. The view is re-made
   * when wasm memory has grown (growth detaches old views), so read `.data` again after any
   * call that may allocate rather than keeping a view across calls.
   *
   * @throws Error after {@link Tensor.dispose}.
   */
  get data(): Float32Array {
    return this.buffer.view();
  }

  /** Number of elements. */
  get length(): number {
    return this.buffer.length;
  }

  /** Whether {@link Tensor.dispose} was called. */
  get disposed(): boolean {
    return this.#buffer === undefined;
  }

  /** @internal The memory behind the tensor. */
  get buffer(): F32Buffer {
    if (this.#buffer === undefined) {
      throw new Error(`wasm-batchnorm: Tensor [${this.shape.join(", ")}] used after dispose()`);
    }
    return this.#buffer;
  }

  /** Frees the tensor's memory. A second call does nothing. */
  dispose(): void {
    this.#buffer?.free();
    this.#buffer = undefined;
  }

  /** `using t = bn.tensor(shape)` disposes it at the end of the block. */
  [disposeSymbol](): void {
    this.dispose();
  }
}

export { disposeSymbol };
