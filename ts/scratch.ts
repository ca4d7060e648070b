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
}

/**
 * Floats that {@link allocScratch} takes for `channels` channels (`Infinity` when the
 * back end's workspace cannot be that large).
 */
export function scratchFloats(backend: Backend, channels: number, reserve = 0): number {
  return (ROLES.length + reserve) * channels + backend.workspaceFloats(channels);
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
  return scratch as ChannelScratch;
}
