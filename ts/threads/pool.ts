/**
 * A pool of workers that run the kernels over one shared memory, driven synchronously by the
 * calling thread.
 *
 * The control block (`threads.rs`'s `Control`, 32 bytes) holds, as int32: `[0]` the generation
 * (bumped once per job, what idle workers wait on), `[1]` chunks done of the current job,
 * `[2]` stop, `[3]` the job's address, `[4]` set when a worker's kernel threw; and at byte 24
 * the claim word, a uint64 of the job's chunk count (high half) and the next chunk to claim.
 * A job runs so: the caller writes the job, clears `[1]`, stores `[3]` and the claim word,
 * bumps `[0]` and `Atomics.notify`s it; every thread, the caller included, calls `bn_work`,
 * which claims chunks by compare-and-swap on the claim word until none is left and adds each
 * finished chunk to `[1]`; the caller, done claiming, waits (spinning briefly, then in bounded
 * `Atomics.wait`s) until `[1]` counts every chunk. It never waits for a worker that claimed
 * nothing: one that wakes late (a busy machine) finds no chunk left and sleeps again. A job is
 * rewritten only after all its chunks are done, so a claimed chunk always reads its own job.
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
/** Index of the claim word in a BigUint64Array of the control block. */
const CLAIM = 3;

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
  readonly #claim: BigUint64Array;
  readonly #control: number;
  readonly #work: (control: number, slot: number) => number;
  readonly #handles: { terminate(): void }[];
  readonly #timeoutMs: number;
  #broken: string | undefined;
  /** Counts since the pool started: passes, their chunks, and the chunks the caller ran. */
  readonly stats = { passes: 0, chunks: 0, callerChunks: 0 };

  private constructor(
    memory: WebAssembly.Memory,
    control: number,
    work: (control: number, slot: number) => number,
    handles: { terminate(): void }[],
    timeoutMs: number,
  ) {
    // Views of a shared memory stay valid when it grows.
    this.#ctl = new Int32Array(memory.buffer, control, 8);
    this.#claim = new BigUint64Array(memory.buffer, control, 4);
    this.#control = control;
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
    work: (control: number, slot: number) => number,
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
    return new Pool(heap.memory, control, work, handles, options.timeoutMs ?? 10_000);
  }

  /** Whether the pool can run jobs (it was not closed and no worker failed). */
  get usable(): boolean {
    return this.#broken === undefined;
  }

  /** Runs the job at byte address `job` (of `chunks` chunks) on every thread, and returns when all its chunks are done. */
  run(job: number, chunks: number): void {
    if (this.#broken !== undefined) throw new Error(`wasm-batchnorm: ${this.#broken}`);
    const ctl = this.#ctl;
    Atomics.store(ctl, DONE, 0);
    Atomics.store(ctl, JOB, job);
    Atomics.store(this.#claim, CLAIM, BigInt(chunks) << 32n);
    if (this.workers > 0) {
      Atomics.add(ctl, GENERATION, 1);
      Atomics.notify(ctl, GENERATION);
    }
    const t0 = performance.now();
    let failure: unknown;
    this.stats.passes++;
    this.stats.chunks += chunks;
    try {
      this.stats.callerChunks += this.#work(this.#control, 0);
    } catch (error) {
      failure = error;
    }
    if (failure === undefined && Atomics.load(ctl, DONE) === chunks) return;
    // Wait for the chunks that workers claimed, even after a failure here: they are writing
    // memory the caller may reuse.
    const deadline = performance.now() + this.#timeoutMs + 4 * (performance.now() - t0);
    let spins = SPIN;
    for (;;) {
      const done = Atomics.load(ctl, DONE);
      if (done >= chunks || Atomics.load(ctl, FAILED) !== 0) break;
      if (failure !== undefined) {
        // Our own chunk failed and is never counted: wait only for the others' claims.
        const claimed = Number(Atomics.load(this.#claim, CLAIM) & 0xffffffffn);
        if (done >= claimed - 1) break;
      }
      if (spins-- > 0) continue;
      const left = deadline - performance.now();
      if (left <= 0) {
        this.#broken = `the thread pool stopped making progress (${done} of ${chunks} chunks of a pass done); it is not used again`;
        throw new Error(`wasm-batchnorm: ${this.#broken}`);
      }
      Atomics.wait(ctl, DONE, done, Math.min(left, 1000));
    }
    if (failure !== undefined) {
      this.#broken =
        "a kernel failed on the calling thread (a bug); the thread pool is not used again";
      throw failure;
    }
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
