/**
 * A pool of workers that run the kernels over one shared memory, driven synchronously by the
 * calling thread.
 *
 * The control block is eight int32 in the shared memory: `[0]` the generation (bumped once
 * per job), `[1]` how many workers finished the current job, `[2]` stop, `[3]` the job's
 * address, `[4]` set when a worker's kernel threw. A job runs so: the caller clears `[1]`,
 * writes `[3]`, bumps `[0]` and `Atomics.notify`s it; every thread, the caller included, calls
 * `bn_work` (which claims chunks with an atomic counter until none is left); each worker then
 * adds 1 to `[1]` and notifies it, and the caller, done with its own chunks, waits (bounded)
 * until every worker has counted itself. Only then is the next job written, so no worker ever
 * reads a job that is being rewritten. Workers spin briefly before they sleep, and so does the
 * caller, because passes come in quick succession (moments, then the map).
 *
 * @module
 */
import type { Heap } from "../wasm/memory.js";

/** What a worker is started with (structured-cloned: the module and the shared memory). */
export interface WorkerData {
  readonly module: WebAssembly.Module;
  readonly memory: WebAssembly.Memory;
  /** Byte address of the control block. */
  readonly control: number;
  /** The top of the worker's own stack (the stack grows down). */
  readonly stackTop: number;
  /** The worker's scratch slot in each job (the caller has slot 0). */
  readonly slot: number;
  /** Times to poll the generation before sleeping. */
  readonly spin: number;
  /** The generation when the worker starts. */
  readonly generation: number;
}

/** How one runtime starts workers. */
export interface ThreadPlatform {
  /** Logical processors available (for `threads: "auto"`). */
  cores(): number;
  /** Starts a worker running `source` (a script) with `data`; its messages go to `onMessage`. */
  spawn(
    source: string,
    data: WorkerData,
    onMessage: (message: unknown) => void,
    onError: (error: unknown) => void,
  ): { terminate(): void };
}

/** Bytes of stack per worker (the kernels need little; Rust's main stack is 1 MiB). */
const STACK_BYTES = 256 * 1024;
/** Polls of the control block before a thread sleeps (about 0.1 ms). */
const SPIN = 20_000;

const GENERATION = 0;
const DONE = 1;
const STOP = 2;
const JOB = 3;
const FAILED = 4;

export interface PoolOptions {
  /** Milliseconds a worker may take past the caller's own share before the pool gives up. */
  readonly timeoutMs?: number;
  /** Milliseconds to wait for the workers to start. */
  readonly startMs?: number;
}

export class Pool {
  /** Worker threads, besides the calling thread. */
  readonly workers: number;
  readonly #ctl: Int32Array;
  readonly #work: (job: number, slot: number) => number;
  readonly #handles: { terminate(): void }[];
  readonly #timeoutMs: number;
  #broken: string | undefined;

  private constructor(
    ctl: Int32Array,
    work: (job: number, slot: number) => number,
    handles: { terminate(): void }[],
    timeoutMs: number,
  ) {
    this.#ctl = ctl;
    this.#work = work;
    this.#handles = handles;
    this.workers = handles.length;
    this.#timeoutMs = timeoutMs;
  }

  /**
   * Starts `workers` workers over `heap`'s shared memory (their stacks and the control block
   * are allocated from it, for the pool's lifetime). `work` is the calling thread's `bn_work`.
   */
  static async start(
    platform: ThreadPlatform | undefined,
    source: string,
    module: WebAssembly.Module,
    heap: Heap,
    work: (job: number, slot: number) => number,
    workers: number,
    options: PoolOptions = {},
  ): Promise<Pool> {
    const control = heap.alloc(32);
    const ctl = new Int32Array(heap.memory.buffer, control, 8);
    const handles: { terminate(): void }[] = [];
    if (workers > 0 && platform === undefined) {
      throw new Error("wasm-batchnorm: this runtime cannot start workers");
    }
    const startMs = options.startMs ?? 30_000;
    try {
      await Promise.all(
        Array.from({ length: workers }, (_, k) => {
          const stack = heap.alloc(STACK_BYTES);
          const data: WorkerData = {
            module,
            memory: heap.memory,
            control,
            stackTop: stack + STACK_BYTES,
            slot: k + 1,
            spin: SPIN,
            generation: 0,
          };
          return new Promise<void>((resolve, reject) => {
            const timer = setTimeout(
              () => reject(new Error(`wasm-batchnorm: a worker did not start in ${startMs} ms`)),
              startMs,
            );
            const done = (f: () => void) => {
              clearTimeout(timer);
              f();
            };
            const handle = (platform as ThreadPlatform).spawn(
              source,
              data,
              (message) => {
                const m = message as { ready?: boolean; error?: string };
                if (m.ready === true) done(resolve);
                else if (m.error !== undefined) {
                  done(() => reject(new Error(`wasm-batchnorm: a worker failed: ${m.error}`)));
                }
              },
              (error) => done(() => reject(error)),
            );
            handles.push(handle);
          });
        }),
      );
    } catch (error) {
      Atomics.store(ctl, STOP, 1);
      Atomics.add(ctl, GENERATION, 1);
      Atomics.notify(ctl, GENERATION);
      for (const h of handles) h.terminate();
      throw error;
    }
    return new Pool(ctl, work, handles, options.timeoutMs ?? 10_000);
  }

  /** Whether the pool can run jobs (it was not closed and no worker failed). */
  get usable(): boolean {
    return this.#broken === undefined;
  }

  /** Runs the job at byte address `job` on every thread, and returns when all are done. */
  run(job: number): void {
    if (this.#broken !== undefined) throw new Error(`wasm-batchnorm: ${this.#broken}`);
    if (this.workers === 0) {
      this.#work(job, 0);
      return;
    }
    const ctl = this.#ctl;
    Atomics.store(ctl, DONE, 0);
    Atomics.store(ctl, JOB, job);
    Atomics.add(ctl, GENERATION, 1);
    Atomics.notify(ctl, GENERATION);
    const t0 = performance.now();
    let failure: unknown;
    try {
      this.#work(job, 0);
    } catch (error) {
      failure = error;
    }
    // Wait for the workers even after a failure: they may still be writing memory.
    const deadline = performance.now() + this.#timeoutMs + 4 * (performance.now() - t0);
    let spins = SPIN;
    for (;;) {
      const done = Atomics.load(ctl, DONE);
      if (done >= this.workers) break;
      if (spins-- > 0) continue;
      const left = deadline - performance.now();
      if (left <= 0) {
        this.#broken = `a worker of the thread pool stopped responding (${this.workers - done} of ${this.workers} did not finish a pass); the pool is not used again`;
        throw new Error(`wasm-batchnorm: ${this.#broken}`);
      }
      Atomics.wait(ctl, DONE, done, Math.min(left, 1000));
    }
    if (failure !== undefined) throw failure;
    if (Atomics.load(ctl, FAILED) !== 0) {
      this.#broken =
        "a kernel failed in a worker of the thread pool (a bug); the pool is not used again";
      throw new Error(`wasm-batchnorm: ${this.#broken}`);
    }
  }

  /** Stops the workers; the pool cannot run jobs afterwards. */
  close(): void {
    if (this.#broken === undefined) this.#broken = "the thread pool was closed";
    Atomics.store(this.#ctl, STOP, 1);
    Atomics.add(this.#ctl, GENERATION, 1);
    Atomics.notify(this.#ctl, GENERATION);
    for (const h of this.#handles) h.terminate();
  }
}
