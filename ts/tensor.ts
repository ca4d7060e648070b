/**
 * Tensors that live in a back end's memory, for the zero-copy path.
 *
 * @module
 */
import type { Backend, F32Buffer } from "./backend.js";
import { show, typeName } from "./errors.js";
import { freeWhenCollected, keepAlive } from "./lifetime.js";
import { shapeLength } from "./shape.js";

const disposeSymbol: typeof Symbol.dispose =
  (Symbol as { dispose?: typeof Symbol.dispose }).dispose ??
  (Symbol.for("Symbol.dispose") as typeof Symbol.dispose);

/**
 * A float32 tensor in the memory of one back end (for wasm: the instance's linear memory), made
 * by {@link BatchNorm.tensor} and read and written in place through {@link Tensor.data}. Free it
 * with {@link Tensor.dispose} (or `using`); one dropped without it is freed when the garbage
 * collector reclaims it.
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
    freeWhenCollected(this, buffer);
  }

  /** @internal A zero-filled tensor of a checked shape (`where` names the caller in errors). */
  static alloc(backend: Backend, shape: readonly number[], where: string): Tensor {
    const length = shapeLength(shape, where, "shape");
    return new Tensor(backend, shape, backend.alloc(length));
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
    if (this.#buffer === undefined) return;
    keepAlive(this);
    this.#buffer.free();
    this.#buffer = undefined;
  }

  /** `using t = bn.tensor(shape)` disposes it at the end of the block. */
  [disposeSymbol](): void {
    this.dispose();
  }
}

/**
 * Checks that `t` is a live tensor of `backend`'s memory; `runsOn` ends the refusal of another
 * back end's tensor, after "but" (the module's words by default).
 */
export function checkTensor(
  t: unknown,
  backend: Backend,
  where: string,
  name: string,
  runsOn = `this module runs on ${backend.kind}: make it with this module's tensor()`,
): Tensor {
  if (!(t instanceof Tensor)) {
    throw new TypeError(`${where}: ${name} must be a Tensor, got ${typeName(t)}`);
  }
  if (t.disposed) {
    throw new Error(`${where}: ${name} (Tensor [${t.shape.join(", ")}]) was disposed`);
  }
  if (t.backend !== backend) {
    throw new TypeError(
      `${where}: ${name} belongs to the ${t.backend.kind} back end's memory, but ${runsOn}`,
    );
  }
  return t;
}

/** The `out` of a Tensor call's options object (`undefined` when there is none). */
export function checkOut(options: unknown, where: string): Tensor | undefined {
  if (options === undefined) return undefined;
  if (typeof options !== "object" || options === null || Array.isArray(options)) {
    throw new TypeError(
      `${where}: with a Tensor, the second argument must be an options object { out?: Tensor }, got ${show(options)}`,
    );
  }
  const out = (options as { out?: unknown }).out;
  if (out !== undefined && !(out instanceof Tensor)) {
    throw new TypeError(`${where}: options.out must be a Tensor, got ${typeName(out)}`);
  }
  return out;
}

export { disposeSymbol };
