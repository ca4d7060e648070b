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
  /** Where the back end has {@link Backend.channelMath}: what its calls read and write. */
  readonly stage?: ChannelStage;
}

/**
 * The module's arrays that {@link Backend.channelMath} reads or writes, copied into the back
 * end's memory for a call (they live in JavaScript, where memory growth cannot detach them),
 * and its float64 `invstd` (two floats a channel).
 */
export interface ChannelStage {
  readonly weight: F32Buffer;
  readonly bias: F32Buffer;
  readonly runningMean: F32Buffer;
  readonly runningVar: F32Buffer;
  readonly dWeight: F32Buffer;
  readonly invstd: F32Buffer;
}

/** Arrays of C floats a {@link ChannelStage} takes: five float32 ones and a float64 one. */
const STAGE_ARRAYS = 7;

/** Arrays of C floats the scratch takes in `backend`'s memory (the stage where there is one). */
function scratchArrays(backend: Backend): number {
  return ROLES.length + (backend.channelMath === undefined ? 0 : STAGE_ARRAYS);
}

/**
 * Floats that {@link allocScratch} takes for `channels` channels (`Infinity` when the
 * back end's workspace cannot be that large).
 */
export function scratchFloats(backend: Backend, channels: number, reserve = 0): number {
  return (scratchArrays(backend) + reserve) * channels + backend.workspaceFloats(channels);
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
  if (backend.channelMath === undefined) return scratch as ChannelScratch;
  const alloc = () => buffers.alloc(channels);
  const stage: ChannelStage = {
    weight: alloc(),
    bias: alloc(),
    runningMean: alloc(),
    runningVar: alloc(),
    dWeight: alloc(),
    invstd: buffers.alloc(2 * channels),
  };
  return { ...scratch, stage } as ChannelScratch;
}
