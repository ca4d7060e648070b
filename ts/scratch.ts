/**
 * The per-channel arrays the passes read and write, in the back end's memory, each named by its
 * role. A module keeps one set for its life; a functional call makes one for the call.
 *
 * @module
 */
import type { Backend, F32Buffer } from "./backend.js";
import type { BufferSet } from "./lifetime.js";

/** Per-channel float32 buffers in a {@link ChannelScratch}. */
const ROLES = [
  "mean",
  "variance",
  "center",
  "scale",
  "shift",
  "kDy",
  "kXc",
  "kConst",
  "sumDy",
  "sumDyXc",
] as const;

type Role = (typeof ROLES)[number];

export interface ChannelScratch extends Record<Role, F32Buffer> {
  /** The kernels' own scratch space. */
  readonly ws: F32Buffer;
  /**
   * Where the back end's {@link Backend.channelMath} is used (see `CHANNEL_MATH_MIN`): what
   * its calls read and write.
   */
  readonly stage?: ChannelStage;
}

/**
 * The module's arrays that {@link Backend.channelMath} reads or writes, copied into the back
 * end's memory for a call (they live in JavaScript, where memory growth cannot detach them),
 * and its float64 `invstd` (two floats a channel).
 */
export interface ChannelStage {
  readonly weight: F32Buffer;
  readonly runningMean: F32Buffer;
  readonly runningVar: F32Buffer;
  readonly dWeight: F32Buffer;
  readonly invstd: F32Buffer;
}

/** Arrays of C floats a {@link ChannelStage} takes: four float32 ones and a float64 one. */
const STAGE_ARRAYS = 6;

/**
 * Channels from which a back end's {@link ChannelMath} pays, and the scratch has a stage:
 * below, copying the module's arrays into wasm memory and back costs more than the loops of
 * core.ts (SIMD build, Node 20, zero-copy, [2, C]: a training forward took 0.84 µs instead of
 * 0.80 at C = 16, 1.0 instead of 0.96 at 32, 1.15 instead of 1.19 at 64, 2.5 instead of 3.9
 * at 256; forward + backward 3.7 instead of 4.1 µs at 32, 6.4 instead of 9.5 at 256).
 */
const CHANNEL_MATH_MIN = 32;

/** Whether a scratch of `channels` channels on `backend` has a {@link ChannelStage}. */
function hasStage(backend: Backend, channels: number): boolean {
  return backend.channelMath !== undefined && channels >= CHANNEL_MATH_MIN;
}

/** Arrays of C floats the scratch takes in `backend`'s memory (the stage where there is one). */
function scratchArrays(backend: Backend, channels: number): number {
  return ROLES.length + (hasStage(backend, channels) ? STAGE_ARRAYS : 0);
}

/**
 * Floats that {@link allocScratch} takes for `channels` channels (`Infinity` when the
 * back end's workspace cannot be that large).
 */
export function scratchFloats(backend: Backend, channels: number, reserve = 0): number {
  const arrays = scratchArrays(backend, channels) + reserve;
  return arrays * channels + backend.workspaceFloats(channels);
}

/**
 * Throws a RangeError when the per-channel buffers of `channels` channels, and `reserve`
 * more arrays of `channels` floats, cannot fit in `backend`'s memory next to what is live
 * (`where`: who asks; `name`: what the channel count is called there). Nothing is allocated.
 */
export function checkScratchFits(
  backend: Backend,
  channels: number,
  where: string,
  name: string,
  reserve = 0,
): void {
  const floats = scratchFloats(backend, channels, reserve);
  if (!backend.fits(floats)) {
    const bytes = Number.isFinite(floats) ? `${floats * 4} bytes` : "more than 4 GiB";
    throw new RangeError(
      `${where}: ${name} = ${channels} is too large: its per-channel arrays need ${bytes} of ` +
        "wasm memory, which holds at most 4 GiB (less what is in use)",
    );
  }
}

/**
 * Allocates the per-channel buffers for `channels` channels in `buffers`' back end, refused
 * before anything is allocated when they cannot all fit, together with `reserve` arrays of
 * `channels` floats that the caller allocates next (see {@link checkScratchFits}).
 */
export function allocScratch(
  buffers: BufferSet,
  channels: number,
  where: string,
  name: string,
  reserve = 0,
): ChannelScratch {
  const { backend } = buffers;
  checkScratchFits(backend, channels, where, name, reserve);
  const scratch: Partial<Record<Role | "ws", F32Buffer>> = {};
  for (const role of ROLES) scratch[role] = buffers.alloc(channels);
  scratch.ws = buffers.alloc(backend.workspaceFloats(channels));
  if (!hasStage(backend, channels)) return scratch as ChannelScratch;
  const alloc = () => buffers.alloc(channels);
  const stage: ChannelStage = {
    weight: alloc(),
    runningMean: alloc(),
    runningVar: alloc(),
    dWeight: alloc(),
    invstd: buffers.alloc(2 * channels),
  };
  return { ...scratch, stage } as ChannelScratch;
}
