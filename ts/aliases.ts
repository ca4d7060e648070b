/**
 * PyTorch's `BatchNorm1d`, `BatchNorm2d` and `BatchNorm3d`: the same module, checking the input
 * rank as PyTorch does.
 *
 * @module
 */
import { BatchNorm } from "./batch-norm.js";

/** {@link BatchNorm} for `[N, C]` or `[N, C, L]` input (rank 2 or 3), like PyTorch's. */
export class BatchNorm1d extends BatchNorm {
  protected override readonly ranks = {
    accepted: [2, 3],
    name: "BatchNorm1d",
    forms: "2-D [N, C] or 3-D [N, C, L]",
  };
}

/** {@link BatchNorm} for `[N, C, H, W]` input (rank 4), like PyTorch's. */
export class BatchNorm2d extends BatchNorm {
  protected override readonly ranks = {
    accepted: [4],
    name: "BatchNorm2d",
    forms: "4-D [N, C, H, W]",
  };
}

/** {@link BatchNorm} for `[N, C, D, H, W]` input (rank 5), like PyTorch's. */
export class BatchNorm3d extends BatchNorm {
  protected override readonly ranks = {
    accepted: [5],
    name: "BatchNorm3d",
    forms: "5-D [N, C, D, H, W]",
  };
}
