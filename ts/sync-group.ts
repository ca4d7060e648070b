/**
 * A ready transport for synchronized batch norm: replicas in `worker_threads` or Web Workers
 * exchanging through one `SharedArrayBuffer`, with `Atomics` for the barrier.
 *
 * The main thread calls {@link createSyncGroup} and posts the handle (plain data and the shared
 * buffer, so it is structured-cloneable) to each worker; a worker calls {@link joinSyncGroup} and
 * passes the member as `new BatchNorm(C, { sync })`. `allGather` blocks in `Atomics.wait`, which
 * a browser's main thread may not do: replicas run in workers.
 *
 * Nobody hangs: every wait ends at `timeoutMs`, and then the waiter aborts the group saying which
 * ranks did not arrive. A replica that fails calls `member.abort(error)` (or the main thread,
 * seeing a worker die, calls {@link abortSyncGroup}): the abort wakes every waiter at once, and
 * every later `allGather` throws, all with the first abort's message.
 *
 * Memory: slots for every rank's data, twice (calls alternate between the two sets), so one
 * barrier per call suffices — a rank cannot write call k + 2's data before every rank has passed
 * call k + 1's barrier, which it reaches only after reading call k's.
 *
 * @module
 */
import { isTyped, show, typeName } from "./errors.js";
import type { BatchNormSync } from "./sync.js";

const KIND = "wasm-batchnorm/sync-group";

/** Options of {@link createSyncGroup}. */
export interface SyncGroupOptions {
  /**
   * The most values one `allGather` may send per rank. Default 65,536. The buffer holds
   * `16·size·maxFloats` bytes. A BatchNorm of C channels sends `3 + 2·C`.
   */
  maxFloats?: number;
  /**
   * How long a rank waits for the others in one `allGather` before it aborts the group, in
   * milliseconds. Default 30,000. Replicas start at different times: leave room for that.
   */
  timeoutMs?: number;
}

/** What {@link createSyncGroup} returns: post it to each worker (it is structured-cloneable). */
export interface SyncGroupHandle {
  readonly kind: typeof KIND;
  readonly size: number;
  readonly maxFloats: number;
  readonly timeoutMs: number;
  readonly buffer: SharedArrayBuffer;
}

/** A replica's end of a group: `options.sync` of its modules, and an all-gather for anything. */
export interface SyncGroupMember extends BatchNormSync {
  /** Every rank's `local` (a copy), in rank order. Blocks until all ranks have called it. */
  allGather(local: Float64Array): Float64Array[];
  /** Fails the group: every rank's waiting and later `allGather` throws with this reason. */
  abort(reason: unknown): void;
}

// Control words (Int32): the barrier's generation and arrival count, the abort's claim, flag
// and message length; then per rank: joined, calls made, and the length sent in each slot set.
const { GEN, ARRIVED, CLAIM, ABORTED, MSG_LEN, HEAD } = {
  GEN: 0,
  ARRIVED: 1,
  CLAIM: 2,
  ABORTED: 3,
  MSG_LEN: 4,
  HEAD: 8,
} as const;
const MESSAGE_CHARS = 1024;

function layoutOf(size: number, maxFloats: number) {
  const joined = HEAD;
  const calls = joined + size;
  const lens = calls + size;
  const message = lens + 2 * size;
  const ints = message + MESSAGE_CHARS / 2;
  const dataByte = Math.ceil((ints * 4) / 8) * 8;
  return { joined, calls, lens, message, dataByte, bytes: dataByte + 16 * size * maxFloats };
}

function checkInt(v: unknown, min: number, where: string, name: string): number {
  if (!Number.isSafeInteger(v) || (v as number) < min) {
    throw new RangeError(`${where}: ${name} must be an integer ≥ ${min}, got ${show(v)}`);
  }
  return v as number;
}

function checkTimeout(v: unknown, where: string): number {
  if (typeof v !== "number" || !(v > 0) || !Number.isFinite(v)) {
    throw new RangeError(
      `${where}: timeoutMs must be a finite number > 0 (every wait is bounded), got ${show(v)}`,
    );
  }
  return v;
}

const ISOLATION =
  "SharedArrayBuffer is not available: a browser page must be cross-origin isolated, served " +
  "with the headers Cross-Origin-Opener-Policy: same-origin and Cross-Origin-Embedder-Policy: " +
  "require-corp (then crossOriginIsolated is true)";

/**
 * Makes a group of `size` replicas (ranks 0 to size − 1). Call it on the main thread (it does
 * not block) and post the handle to the workers.
 *
 * @throws RangeError for a bad size or option; Error when `SharedArrayBuffer` is unavailable (a
 *   page that is not cross-origin isolated).
 */
export function createSyncGroup(size: number, options: SyncGroupOptions = {}): SyncGroupHandle {
  const where = "createSyncGroup";
  checkInt(size, 1, where, "size");
  const maxFloats = checkInt(options.maxFloats ?? 65536, 1, where, "options.maxFloats");
  const timeoutMs = checkTimeout(options.timeoutMs ?? 30_000, where);
  if (typeof SharedArrayBuffer === "undefined") throw new Error(`${where}: ${ISOLATION}`);
  const { bytes } = layoutOf(size, maxFloats);
  let buffer: SharedArrayBuffer;
  try {
    buffer = new SharedArrayBuffer(bytes);
  } catch (error) {
    throw new RangeError(
      `${where}: cannot allocate ${bytes} bytes for ${size} ranks × 2 × ${maxFloats} floats: ${String(error)}`,
    );
  }
  return { kind: KIND, size, maxFloats, timeoutMs, buffer };
}

/** Records the first abort's message and wakes every waiter; later aborts are ignored. */
function abortGroup(buffer: SharedArrayBuffer, size: number, text: string): void {
  const ctrl = new Int32Array(buffer);
  if (Atomics.compareExchange(ctrl, CLAIM, 0, 1) !== 0) return;
  const { message } = layoutOf(size, 0);
  const chars = new Uint16Array(buffer, message * 4, MESSAGE_CHARS);
  const n = Math.min(text.length, MESSAGE_CHARS);
  for (let i = 0; i < n; i++) chars[i] = text.charCodeAt(i);
  Atomics.store(ctrl, MSG_LEN, n);
  // The flag after the message, the generation after the flag: a waiter woken by this bump
  // sees the flag, and whoever sees the flag reads a whole message.
  Atomics.store(ctrl, ABORTED, 1);
  Atomics.add(ctrl, GEN, 1);
  Atomics.notify(ctrl, GEN);
}

function abortMessage(buffer: SharedArrayBuffer, size: number): string | null {
  const ctrl = new Int32Array(buffer);
  if (Atomics.load(ctrl, ABORTED) === 0) return null;
  const { message } = layoutOf(size, 0);
  const chars = new Uint16Array(buffer, message * 4, Atomics.load(ctrl, MSG_LEN));
  return String.fromCharCode(...chars);
}

function describe(reason: unknown): string {
  return reason instanceof Error ? `${reason.name}: ${reason.message}` : String(reason);
}

/**
 * Fails a group from outside it (the main thread, when a worker dies): every rank's waiting and
 * later `allGather` throws with `reason`. Does not block.
 */
export function abortSyncGroup(handle: SyncGroupHandle, reason: unknown): void {
  checkHandle(handle, "abortSyncGroup");
  abortGroup(handle.buffer, handle.size, `aborted by the main thread: ${describe(reason)}`);
}

function checkHandle(handle: unknown, where: string): SyncGroupHandle {
  const h = handle as Partial<SyncGroupHandle> | null;
  if (typeof h !== "object" || h === null || h.kind !== KIND) {
    throw new TypeError(
      `${where}: handle must be what createSyncGroup returned, got ${typeName(handle)}`,
    );
  }
  const size = checkInt(h.size, 1, where, "handle.size");
  const maxFloats = checkInt(h.maxFloats, 1, where, "handle.maxFloats");
  checkTimeout(h.timeoutMs, where);
  const buffer = h.buffer;
  if (Object.prototype.toString.call(buffer) !== "[object SharedArrayBuffer]") {
    throw new TypeError(
      `${where}: handle.buffer must be a SharedArrayBuffer, got ${typeName(buffer)}`,
    );
  }
  const bytes = layoutOf(size, maxFloats).bytes;
  if ((buffer as SharedArrayBuffer).byteLength !== bytes) {
    throw new RangeError(
      `${where}: handle.buffer has ${(buffer as SharedArrayBuffer).byteLength} bytes, a group of ${size} × ${maxFloats} floats has ${bytes}`,
    );
  }
  return h as SyncGroupHandle;
}

/**
 * Joins a group as `rank`, in a worker. Each rank joins once.
 *
 * @throws Error on a thread that may not block (a browser's main thread: use a Web Worker),
 *   when the rank already joined, or for a bad handle or rank.
 */
export function joinSyncGroup(handle: SyncGroupHandle, rank: number): SyncGroupMember {
  const where = "joinSyncGroup";
  const { size, maxFloats, timeoutMs, buffer } = checkHandle(handle, where);
  if (!Number.isSafeInteger(rank) || rank < 0 || rank >= size) {
    throw new RangeError(`${where}: rank must be an integer in [0, ${size}), got ${show(rank)}`);
  }
  const ctrl = new Int32Array(buffer);
  try {
    Atomics.wait(ctrl, GEN, Atomics.load(ctrl, GEN) + 1, 0); // "not-equal" at once where allowed
  } catch (error) {
    throw new Error(
      `${where}: this thread cannot block in Atomics.wait (${describe(error)}); a browser's ` +
        "main thread never may: join the group from a Web Worker (the main thread may create and abort it)",
    );
  }
  const at = layoutOf(size, maxFloats);
  if (Atomics.compareExchange(ctrl, at.joined + rank, 0, 1) !== 0) {
    throw new Error(`${where}: rank ${rank} already joined this group (each rank joins once)`);
  }
  const data = new Float64Array(buffer, at.dataByte, 2 * size * maxFloats);
  const slot = (set: number, r: number) => (set * size + r) * maxFloats;
  let calls = 0;

  const fail = (text: string, make: (m: string) => Error = (m) => new Error(m)): never => {
    abortGroup(buffer, size, text);
    throw make(`sync group: ${text}`);
  };
  const throwIfAborted = () => {
    const message = abortMessage(buffer, size);
    if (message !== null) throw new Error(`sync group: ${message} (seen by rank ${rank})`);
  };
  const late = (k: number) => {
    const ranks: string[] = [];
    for (let r = 0; r < size; r++) {
      if (Atomics.load(ctrl, at.joined + r) === 0) ranks.push(`${r} (never joined)`);
      else if (Atomics.load(ctrl, at.calls + r) < k) ranks.push(`${r}`);
    }
    return ranks.join(", ");
  };

  /** Waits until every rank has arrived at call `k`, or the group is aborted, or time is up. */
  const barrier = (k: number) => {
    const g = Atomics.load(ctrl, GEN);
    if (Atomics.add(ctrl, ARRIVED, 1) === size - 1) {
      Atomics.store(ctrl, ARRIVED, 0);
      Atomics.add(ctrl, GEN, 1);
      Atomics.notify(ctrl, GEN);
    } else {
      const deadline = performance.now() + timeoutMs;
      while (Atomics.load(ctrl, GEN) === g) {
        throwIfAborted();
        const left = deadline - performance.now();
        if (left <= 0) {
          fail(
            `rank ${rank} waited ${timeoutMs} ms in allGather #${k} for rank(s) ${late(k)}, ` +
              "which did not arrive (stopped, failed without abort(), or out of step)",
          );
        }
        Atomics.wait(ctrl, GEN, g, left);
      }
    }
    throwIfAborted();
  };

  return {
    rank,
    size,
    allGather(local: Float64Array): Float64Array[] {
      throwIfAborted();
      if (!isTyped(local, "Float64Array")) {
        fail(`rank ${rank}: allGather needs a Float64Array, got ${typeName(local)}`, (m) => {
          return new TypeError(m);
        });
      }
      if (local.length > maxFloats) {
        fail(
          `rank ${rank}: allGather of ${local.length} values, the group holds ${maxFloats} per rank (createSyncGroup's maxFloats)`,
          (m) => new RangeError(m),
        );
      }
      const k = ++calls;
      const set = k & 1;
      data.set(local, slot(set, rank));
      Atomics.store(ctrl, at.lens + set * size + rank, local.length);
      Atomics.store(ctrl, at.calls + rank, k);
      barrier(k);
      const out: Float64Array[] = [];
      for (let r = 0; r < size; r++) {
        const from = slot(set, r);
        out.push(data.slice(from, from + Atomics.load(ctrl, at.lens + set * size + r)));
      }
      return out;
    },
    abort(reason: unknown): void {
      abortGroup(buffer, size, `rank ${rank} failed: ${describe(reason)}`);
    },
  };
}
