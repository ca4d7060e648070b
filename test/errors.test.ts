/**
 * Bad input (docs/design.md, Errors): every case gets a TypeError, RangeError or Error whose
 * message names the argument, what was expected and what came; and nothing changes — weights,
 * running statistics, numBatchesTracked, mode, the pending forward, the heap's live bytes and the
 * memory size are what they were, and the next valid calls give exactly (bit for bit) what a twin
 * module that never saw the bad call gives. Also: NaN and Infinity in the data propagate, as in
 * PyTorch.
 */
import { runInNewContext } from "node:vm";
import { beforeAll, describe, expect, it } from "vitest";
import type { BackendKind } from "../ts/backend.js";
import { BatchNorm, type BatchNormOptions, memoryBytes, type Tensor } from "../ts/index.node.js";
import { Rng } from "./random.js";
import { BACKENDS, initFromDist } from "./setup-backends.js";
import { expectSameBits, expectSameState, live } from "./state.js";

beforeAll(async () => {
  await initFromDist();
});

const C = 3;
const SHAPE = [4, C, 2];
const NCHW_SHAPE = SHAPE;
/** The valid history's shape for NHWC modules. */
const NHWC_SHAPE = [4, 2, C];
const N = 24;

/** What a bad call may use: the module under test, its back end and a few valid arrays. */
interface Ctx {
  bn: BatchNorm;
  kind: BackendKind;
  x: Float32Array;
  tensor(shape: readonly number[]): Tensor;
}

/** A bad call and what it must throw. */
interface Case {
  name: string;
  /** The history before the bad call: "pending" leaves a training forward to differentiate. */
  history?: "pending" | "consumed" | "none";
  options?: BatchNormOptions;
  /** Switch both modules to inference mode before the bad call. */
  inference?: boolean;
  call(ctx: Ctx): unknown;
  type: ErrorConstructor | TypeErrorConstructor | RangeErrorConstructor;
  message: RegExp;
}

/**
 * Runs one bad call against a module and checks that it threw what it should, then that the
 * module, its twin (the same valid calls, no bad one) and the memory agree exactly.
 */
function checkCase(kind: BackendKind, c: Case): void {
  const options: BatchNormOptions = { ...c.options, backend: kind };
  const bn = new BatchNorm(C, options);
  const twin = new BatchNorm(C, options);
  const rng = new Rng(c.name.length);
  const x = rng.normals(N).map((v, i) => v + (i % 4));
  const dy = rng.normals(N);
  // A history: non-default parameters, one training step, one more forward.
  const sd = bn.stateDict();
  if (sd.weight !== undefined) sd.weight.set([0.5, 2, -1]);
  if (sd.bias !== undefined) sd.bias.set([0.25, -3, 1]);
  bn.loadStateDict(sd);
  twin.loadStateDict(sd);
  const history = c.history ?? "pending";
  const SHAPE = options.layout === "NHWC" ? NHWC_SHAPE : NCHW_SHAPE;
  if (history !== "none") {
    for (const m of [bn, twin]) {
      m.forward(x, SHAPE);
      m.backward(dy);
      m.forward(
        x.map((v) => v * 2),
        SHAPE,
      );
      if (history === "consumed") m.backward(dy);
    }
  }
  if (c.inference === true) for (const m of [bn, twin]) m.eval();
  const made: Tensor[] = [];
  const ctx: Ctx = {
    bn,
    kind,
    x,
    tensor: (shape) => {
      const t = bn.tensor(shape);
      made.push(t);
      return t;
    },
  };
  // Arguments are made before the bad call, so the accounting below sees only the call.
  const call = c.call(ctx);
  const liveBefore = live(kind);
  const memoryBefore = memoryBytes(kind);
  let thrown: unknown;
  try {
    if (typeof call === "function") call();
    else throw new Error(`case ${c.name} must return the bad call as a function`);
  } catch (error) {
    thrown = error;
  }
  expect(thrown, "it threw").toBeInstanceOf(c.type);
  expect((thrown as Error).message).toMatch(c.message);
  // Nothing changed…
  expectSameState(bn, twin);
  expect(live(kind), "no memory leaked or freed").toBe(liveBefore);
  expect(memoryBytes(kind), "no memory growth").toBe(memoryBefore);
  // …and the module (and the instance) work on: the pending forward can be differentiated, and
  // training and inference give the twin's bits.
  const y1 = rng.normals(N);
  if (history === "pending") {
    const g = bn.backward(y1);
    const gTwin = twin.backward(y1);
    expectSameBits("dx", g.dx, gTwin.dx);
    expectSameBits("dWeight", g.dWeight, gTwin.dWeight);
    expectSameBits("dBias", g.dBias, gTwin.dBias);
  }
  expectSameBits("training y", bn.forward(y1, SHAPE), twin.forward(y1, SHAPE));
  expectSameBits("dx", bn.backward(x).dx, twin.backward(x).dx);
  for (const m of [bn, twin]) m.eval();
  expectSameBits("inference y", bn.forward(x, SHAPE), twin.forward(x, SHAPE));
  expectSameState(bn, twin);
  for (const t of made) t.dispose();
  bn.dispose();
  twin.dispose();
}

const F = (n: number) => new Float32Array(n);
const otherBackend: Record<BackendKind, BackendKind> = {
  simd: "scalar",
  scalar: "simd",
  js: "simd",
};

const CASES: Case[] = [
  // forward, copy API: data and shape
  {
    name: "wrong data length",
    call:
      ({ bn }) =>
      () =>
        bn.forward(F(23), SHAPE),
    type: RangeError,
    message: /BatchNorm\.forward: x has 23 values but shape \[4, 3, 2\] needs 24/,
  },
  {
    name: "a zero dimension",
    call:
      ({ bn }) =>
      () =>
        bn.forward(F(0), [0, 3]),
    type: RangeError,
    message: /BatchNorm\.forward: shape\[0\] must be a positive integer, got 0/,
  },
  {
    name: "a negative dimension",
    call:
      ({ bn }) =>
      () =>
        bn.forward(F(6), [2, 3, -1]),
    type: RangeError,
    message: /shape\[2\] must be a positive integer, got -1/,
  },
  {
    name: "a NaN dimension",
    call:
      ({ bn }) =>
      () =>
        bn.forward(F(6), [Number.NaN, 3]),
    type: RangeError,
    message: /shape\[0\] must be a positive integer, got NaN/,
  },
  {
    name: "a fractional dimension",
    call:
      ({ bn }) =>
      () =>
        bn.forward(F(6), [2.5, 3]),
    type: RangeError,
    message: /shape\[0\] must be a positive integer, got 2\.5/,
  },
  {
    name: "a string dimension",
    call:
      ({ bn }) =>
      () =>
        bn.forward(F(6), ["2", 3] as unknown as number[]),
    type: RangeError,
    message: /shape\[0\] must be a positive integer, got "2"/,
  },
  {
    name: "an infinite dimension",
    call:
      ({ bn }) =>
      () =>
        bn.forward(F(6), [Number.POSITIVE_INFINITY, 3]),
    type: RangeError,
    message: /shape\[0\] must be a positive integer, got Infinity/,
  },
  {
    name: "rank 1",
    call:
      ({ bn }) =>
      () =>
        bn.forward(F(3), [3]),
    type: RangeError,
    message: /shape must have at least 2 dimensions \(\[N, C, \.\.\.\]\), got \[3\]/,
  },
  {
    name: "rank 0",
    call:
      ({ bn }) =>
      () =>
        bn.forward(F(1), []),
    type: RangeError,
    message: /shape must have at least 2 dimensions \(\[N, C, \.\.\.\]\), got \[\]/,
  },
  {
    name: "channel count ≠ numFeatures (NCHW)",
    call:
      ({ bn }) =>
      () =>
        bn.forward(F(8), [2, 4]),
    type: RangeError,
    message: /shape\[1\] is the channel count \(NCHW\) and must be numFeatures = 3, got 4/,
  },
  {
    name: "channel count ≠ numFeatures (NHWC)",
    options: { layout: "NHWC" },
    call:
      ({ bn }) =>
      () =>
        bn.forward(F(24), [4, 3, 2]),
    type: RangeError,
    message: /shape\[2\] is the channel count \(NHWC\) and must be numFeatures = 3, got 2/,
  },
  {
    name: "one value per channel in training",
    call:
      ({ bn }) =>
      () =>
        bn.forward(F(3), [1, 3]),
    type: RangeError,
    message: /expected more than 1 value per channel when training, got input shape \[1, 3\]/,
  },
  {
    name: "one value per channel in training (spatial 1×1)",
    call:
      ({ bn }) =>
      () =>
        bn.forward(F(3), [1, 3, 1, 1]),
    type: RangeError,
    message: /expected more than 1 value per channel when training, got input shape \[1, 3, 1, 1\]/,
  },
  {
    name: "one value per channel in inference without running statistics",
    options: { trackRunningStats: false },
    inference: true, // batch statistics are still used: PyTorch refuses this too
    call:
      ({ bn }) =>
      () =>
        bn.forward(F(3), [1, 3]),
    type: RangeError,
    message:
      /expected more than 1 value per channel when using batch statistics \(trackRunningStats: false\), got input shape \[1, 3\]/,
  },
  {
    name: "too many elements for a safe integer",
    call:
      ({ bn }) =>
      () =>
        bn.forward(F(6), [2 ** 30, 3, 2 ** 30]),
    type: RangeError,
    message: /shape \[1073741824, 3, 1073741824\] has too many elements/,
  },
  {
    name: "a sparse shape (a hole where the channel axis is not)",
    options: { layout: "NHWC" },
    call: ({ bn }) => {
      const shape: number[] = [];
      shape[0] = 8;
      shape[2] = 3; // shape[1] is a hole: [8, <empty>, 3] is not [8, 3] nor [8, 1, 3]
      return () => bn.forward(F(24), shape);
    },
    type: RangeError,
    message: /BatchNorm\.forward: shape\[1\] must be a positive integer, got undefined/,
  },
  {
    name: "a shape that is not an array",
    call:
      ({ bn }) =>
      () =>
        bn.forward(F(6), "2,3" as unknown as number[]),
    type: TypeError,
    message: /BatchNorm\.forward: shape must be an array of dimensions, got "2,3"/,
  },
  {
    name: "no shape",
    call:
      ({ bn }) =>
      () =>
        (bn.forward as unknown as (x: Float32Array) => unknown)(F(6)),
    type: TypeError,
    message: /shape must be an array of dimensions, got undefined/,
  },
  // forward: input types (refused, not converted: converting would hide a copy)
  ...(
    [
      ["a Float64Array", () => new Float64Array(N), "Float64Array"],
      ["a number[]", () => Array.from({ length: N }, () => 1), "Array"],
      ["an Int32Array", () => new Int32Array(N), "Int32Array"],
      ["undefined", () => undefined, "undefined"],
      ["null", () => null, "null"],
      ["a string", () => "1,2,3", "string"],
    ] as const
  ).map(
    ([what, make, got]): Case => ({
      name: `input that is ${what}`,
      call:
        ({ bn }) =>
        () =>
          bn.forward(make() as unknown as Float32Array, SHAPE),
      type: TypeError,
      message: new RegExp(
        `BatchNorm\\.forward: x must be a Float32Array or a Tensor, got ${got} \\(convert with Float32Array\\.from\\)`,
      ),
    }),
  ),
  // forward: tensors
  {
    name: "a tensor with the wrong channel count",
    call: (c) => {
      const x = c.tensor([2, 4]);
      return () => c.bn.forward(x);
    },
    type: RangeError,
    message: /x\.shape\[1\] is the channel count \(NCHW\) and must be numFeatures = 3, got 4/,
  },
  {
    name: "a rank-1 tensor",
    call: (c) => {
      const x = c.tensor([6]);
      return () => c.bn.forward(x);
    },
    type: RangeError,
    message: /x\.shape must have at least 2 dimensions \(\[N, C, \.\.\.\]\), got \[6\]/,
  },
  {
    name: "a tensor with one value per channel in training",
    call: (c) => {
      const x = c.tensor([1, 3, 1]);
      return () => c.bn.forward(x);
    },
    type: RangeError,
    message: /expected more than 1 value per channel when training, got input shape \[1, 3, 1\]/,
  },
  {
    name: "an output tensor of another shape",
    call: (c) => {
      const x = c.tensor(SHAPE);
      const out = c.tensor([4, 3, 3]);
      return () => c.bn.forward(x, { out });
    },
    type: RangeError,
    message: /options\.out must have shape \[4, 3, 2\], got \[4, 3, 3\]/,
  },
  {
    name: "the input as its own output",
    call: (c) => {
      const x = c.tensor(SHAPE);
      return () => c.bn.forward(x, { out: x });
    },
    type: RangeError,
    message: /options\.out must not be x: backward needs the input/,
  },
  {
    name: "an output that is not a tensor",
    call: (c) => {
      const x = c.tensor(SHAPE);
      return () => c.bn.forward(x, { out: F(N) as unknown as Tensor });
    },
    type: TypeError,
    message: /BatchNorm\.forward: options\.out must be a Tensor, got Float32Array/,
  },
  {
    name: "a shape instead of options with a tensor",
    call: (c) => {
      const x = c.tensor(SHAPE);
      return () => c.bn.forward(x, SHAPE as never);
    },
    type: TypeError,
    message:
      /with a Tensor, the second argument must be an options object \{ out\?: Tensor \}, got \[4, 3, 2\]/,
  },
  {
    name: "a tensor of another back end",
    call: ({ bn, kind }) => {
      const other = new BatchNorm(C, { backend: otherBackend[kind] });
      const x = other.tensor(SHAPE);
      return () => bn.forward(x);
    },
    type: TypeError,
    message:
      /BatchNorm\.forward: x belongs to the (simd|scalar) back end's memory, but this module runs on (simd|scalar|js): make it with this module's tensor\(\)/,
  },
  {
    name: "a tensor of the third back end (js ↔ wasm)",
    call: ({ bn, kind }) => {
      const x = new BatchNorm(C, { backend: kind === "js" ? "scalar" : "js" }).tensor(SHAPE);
      return () => bn.forward(x);
    },
    type: TypeError,
    message:
      /BatchNorm\.forward: x belongs to the (js|scalar) back end's memory, but this module runs on (simd|scalar|js)/,
  },
  {
    name: "an output tensor of another back end",
    call: (c) => {
      const x = c.tensor(SHAPE);
      const out = new BatchNorm(C, { backend: otherBackend[c.kind] }).tensor(SHAPE);
      return () => c.bn.forward(x, { out });
    },
    type: TypeError,
    message: /options\.out belongs to the (simd|scalar) back end's memory, but this module runs on/,
  },
  {
    name: "a disposed tensor",
    call: (c) => {
      const x = c.tensor(SHAPE);
      x.dispose();
      return () => c.bn.forward(x);
    },
    type: Error,
    message: /BatchNorm\.forward: x \(Tensor \[4, 3, 2\]\) was disposed/,
  },
  {
    name: "a disposed output tensor",
    call: (c) => {
      const x = c.tensor(SHAPE);
      const out = c.tensor(SHAPE);
      out.dispose();
      return () => c.bn.forward(x, { out });
    },
    type: Error,
    message: /options\.out \(Tensor \[4, 3, 2\]\) was disposed/,
  },
  // tensor(): shapes and sizes
  {
    name: "tensor() with a zero dimension",
    call:
      ({ bn }) =>
      () =>
        bn.tensor([2, 0]),
    type: RangeError,
    message: /BatchNorm\.tensor: shape\[1\] must be a positive integer, got 0/,
  },
  {
    name: "tensor() with a negative dimension",
    call:
      ({ bn }) =>
      () =>
        bn.tensor([-2, 3]),
    type: RangeError,
    message: /BatchNorm\.tensor: shape\[0\] must be a positive integer, got -2/,
  },
  {
    name: "tensor() with a fractional dimension",
    call:
      ({ bn }) =>
      () =>
        bn.tensor([2, 3.5]),
    type: RangeError,
    message: /BatchNorm\.tensor: shape\[1\] must be a positive integer, got 3\.5/,
  },
  {
    name: "tensor() with a NaN dimension",
    call:
      ({ bn }) =>
      () =>
        bn.tensor([2, Number.NaN]),
    type: RangeError,
    message: /BatchNorm\.tensor: shape\[1\] must be a positive integer, got NaN/,
  },
  {
    name: "tensor() with no array",
    call:
      ({ bn }) =>
      () =>
        bn.tensor(12 as unknown as number[]),
    type: TypeError,
    message: /BatchNorm\.tensor: shape must be an array, got 12/,
  },
  {
    name: "tensor() with too many elements for a safe integer",
    call:
      ({ bn }) =>
      () =>
        bn.tensor([2 ** 20, 2 ** 20, 2 ** 20]),
    type: RangeError,
    message: /BatchNorm\.tensor: shape \[1048576, 1048576, 1048576\] has too many elements/,
  },
  // backward
  {
    name: "backward before any forward",
    history: "none",
    call:
      ({ bn }) =>
      () =>
        bn.backward(F(N)),
    type: Error,
    message:
      /BatchNorm\.backward: no forward\(\) to differentiate: call forward\(\) first \(each forward can be differentiated once\)/,
  },
  {
    name: "backward twice",
    history: "consumed",
    call:
      ({ bn }) =>
      () =>
        bn.backward(F(N)),
    type: Error,
    message: /BatchNorm\.backward: no forward\(\) to differentiate/,
  },
  {
    name: "backward twice, with a tensor",
    history: "consumed",
    call: (c) => {
      const dy = c.tensor(SHAPE);
      return () => c.bn.backward(dy);
    },
    type: Error,
    message: /BatchNorm\.backward: no forward\(\) to differentiate/,
  },
  {
    name: "backward with the wrong length",
    call:
      ({ bn }) =>
      () =>
        bn.backward(F(N + 1)),
    type: RangeError,
    message: /BatchNorm\.backward: dy has 25 values but the forward input \[4, 3, 2\] had 24/,
  },
  {
    name: "backward with a tensor of the wrong shape",
    call: (c) => {
      const dy = c.tensor([4, 2, 3]);
      return () => c.bn.backward(dy);
    },
    type: RangeError,
    message: /BatchNorm\.backward: dy must have shape \[4, 3, 2\], got \[4, 2, 3\]/,
  },
  {
    name: "backward into an output of the wrong shape",
    call: (c) => {
      const dy = c.tensor(SHAPE);
      const out = c.tensor([24]);
      return () => c.bn.backward(dy, { out });
    },
    type: RangeError,
    message: /BatchNorm\.backward: options\.out must have shape \[4, 3, 2\], got \[24\]/,
  },
  {
    name: "backward with a number[]",
    call:
      ({ bn }) =>
      () =>
        bn.backward(Array.from({ length: N }, () => 0) as never),
    type: TypeError,
    message: /BatchNorm\.backward: dy must be a Float32Array or a Tensor, got Array/,
  },
  {
    name: "backward with a Float64Array",
    call:
      ({ bn }) =>
      () =>
        bn.backward(new Float64Array(N) as never),
    type: TypeError,
    message: /BatchNorm\.backward: dy must be a Float32Array or a Tensor, got Float64Array/,
  },
  {
    name: "backward with options.out and a Float32Array dy",
    call: (c) => {
      const out = c.tensor(SHAPE);
      return () => c.bn.backward(F(N) as never, { out });
    },
    type: TypeError,
    message:
      /options\.out is for Tensor gradients; with a Float32Array dy, dx is a new Float32Array/,
  },
  {
    name: "backward with a dy of another back end",
    call: ({ bn, kind }) => {
      const dy = new BatchNorm(C, { backend: otherBackend[kind] }).tensor(SHAPE);
      return () => bn.backward(dy);
    },
    type: TypeError,
    message:
      /BatchNorm\.backward: dy belongs to the (simd|scalar) back end's memory, but this module runs on/,
  },
  {
    name: "backward with a disposed dy",
    call: (c) => {
      const dy = c.tensor(SHAPE);
      dy.dispose();
      return () => c.bn.backward(dy);
    },
    type: Error,
    message: /BatchNorm\.backward: dy \(Tensor \[4, 3, 2\]\) was disposed/,
  },
  // loadStateDict
  {
    name: "loadStateDict with missing keys",
    call:
      ({ bn }) =>
      () =>
        bn.loadStateDict({ weight: F(3), bias: F(3) }),
    type: RangeError,
    message:
      /BatchNorm\.loadStateDict: expected keys \[weight, bias, running_mean, running_var, num_batches_tracked\]; missing: running_mean, running_var, num_batches_tracked/,
  },
  {
    name: "loadStateDict with an unexpected key",
    call: ({ bn }) => {
      const sd = { ...bn.stateDict(), running_std: F(3) };
      return () => bn.loadStateDict(sd);
    },
    type: RangeError,
    message:
      /expected keys \[weight, bias, running_mean, running_var, num_batches_tracked\]; unexpected: running_std/,
  },
  {
    name: "loadStateDict with weight on a module without affine",
    options: { affine: false },
    call: ({ bn }) => {
      const sd = { ...bn.stateDict(), weight: F(3), bias: F(3) };
      return () => bn.loadStateDict(sd);
    },
    type: RangeError,
    message:
      /expected keys \[running_mean, running_var, num_batches_tracked\]; unexpected: weight, bias/,
  },
  {
    name: "loadStateDict with a wrong length (and a valid change before it)",
    call: ({ bn }) => {
      // weight comes first and is valid: it must not be applied either.
      const sd = { ...bn.stateDict(), weight: new Float32Array([9, 9, 9]), running_var: F(2) };
      return () => bn.loadStateDict(sd);
    },
    type: RangeError,
    message: /BatchNorm\.loadStateDict: running_var must have numFeatures = 3 values, got 2/,
  },
  {
    name: "loadStateDict with a string for an array",
    call: ({ bn }) => {
      const sd = { ...bn.stateDict(), bias: "0,0,0" as unknown as Float32Array };
      return () => bn.loadStateDict(sd);
    },
    type: TypeError,
    message: /bias must be a Float32Array, Float64Array or number\[\], got string/,
  },
  {
    name: "loadStateDict with an Int32Array",
    call: ({ bn }) => {
      const sd = { ...bn.stateDict(), running_mean: new Int32Array(3) as unknown as Float32Array };
      return () => bn.loadStateDict(sd);
    },
    type: TypeError,
    message: /running_mean must be a Float32Array, Float64Array or number\[\], got Int32Array/,
  },
  {
    name: "loadStateDict with a non-number in an array",
    call: ({ bn }) => {
      const sd = { ...bn.stateDict(), weight: [1, "2", 3] as unknown as Float32Array };
      return () => bn.loadStateDict(sd);
    },
    type: TypeError,
    message: /weight must be a Float32Array, Float64Array or number\[\], got Array/,
  },
  {
    name: "loadStateDict with a string num_batches_tracked",
    call: ({ bn }) => {
      const sd = { ...bn.stateDict(), num_batches_tracked: "5" as unknown as number };
      return () => bn.loadStateDict(sd);
    },
    type: TypeError,
    message: /num_batches_tracked must be a number or bigint, got string/,
  },
  {
    name: "loadStateDict with a negative num_batches_tracked",
    call: ({ bn }) => {
      const sd = { ...bn.stateDict(), num_batches_tracked: -1 };
      return () => bn.loadStateDict(sd);
    },
    type: RangeError,
    message: /num_batches_tracked must be an integer ≥ 0, got -1/,
  },
  {
    name: "loadStateDict with a fractional num_batches_tracked",
    call: ({ bn }) => {
      const sd = { ...bn.stateDict(), num_batches_tracked: 1.5 };
      return () => bn.loadStateDict(sd);
    },
    type: RangeError,
    message: /num_batches_tracked must be an integer ≥ 0, got 1\.5/,
  },
  {
    name: "loadStateDict with null",
    call:
      ({ bn }) =>
      () =>
        bn.loadStateDict(null as never),
    type: TypeError,
    message: /BatchNorm\.loadStateDict: stateDict must be an object, got null/,
  },
  // mode
  {
    name: "train() with a non-boolean",
    call:
      ({ bn }) =>
      () =>
        bn.train("false" as never),
    type: TypeError,
    message: /BatchNorm\.train: mode must be a boolean, got "false"/,
  },
];

/** Too large for wasm32 memory (4 GiB): an error before any growth, never a crash. */
const TOO_LARGE: Case[] = [
  {
    name: "a tensor of 2^31 floats (8 GiB)",
    call:
      ({ bn }) =>
      () =>
        bn.tensor([1, 1, 2 ** 31]),
    type: RangeError,
    message: /cannot allocate 2147483648 floats: wasm32 memory holds at most 2\^30/,
  },
  {
    name: "a tensor of 2^30 floats (4 GiB: more than the heap can have)",
    call:
      ({ bn }) =>
      () =>
        bn.tensor([2 ** 10, 2 ** 10, 2 ** 10]),
    type: RangeError,
    message: /cannot allocate 4294967296 bytes: wasm32 memory holds at most 4 GiB/,
  },
  {
    name: "a tensor of 16 GiB shaped like an input",
    call:
      ({ bn }) =>
      () =>
        bn.tensor([2 ** 16, 3, 2 ** 16]),
    type: RangeError,
    message: /cannot allocate 12884901888 floats: wasm32 memory holds at most 2\^30/,
  },
];

describe.each(BACKENDS)("bad input on the %s back end", (kind) => {
  it.each(CASES)("$name", (c) => checkCase(kind, c));

  if (kind !== "js") {
    it.each(TOO_LARGE)("$name", (c) => checkCase(kind, c));
  } else {
    it("a tensor too large for a JS typed array", () =>
      checkCase(kind, {
        name: "2^34 floats",
        call:
          ({ bn }) =>
          () =>
            bn.tensor([2 ** 17, 2 ** 17]),
        type: RangeError,
        message: /cannot allocate 17179869184 floats in a Float32Array/,
      }));
  }

  if (kind !== "js") {
    it("a module too large for wasm32 memory", () => {
      const memory = memoryBytes(kind);
      const before = live(kind);
      // 2^28 channels: ten per-channel float32 arrays alone are 10 GiB.
      expect(() => new BatchNorm(2 ** 28, { backend: kind })).toThrow(
        /new BatchNorm: numFeatures = 268435456 is too large: its per-channel arrays need more than 4 GiB of wasm memory, which holds at most 4 GiB/,
      );
      expect(memoryBytes(kind)).toBe(memory); // refused before growing anything
      expect(live(kind)).toBe(before);
    });
  }

  it("accepts a Float32Array from another realm (iframe, vm context), where instanceof fails", () => {
    const foreign = runInNewContext(
      "({ x: new Float32Array([1, 2, 3, 4, 5, 7]), w: new Float64Array([2, 3, 4]) })",
    ) as { x: Float32Array; w: Float64Array };
    expect(foreign.x instanceof Float32Array).toBe(false);
    const bn = new BatchNorm(C, { backend: kind });
    const twin = new BatchNorm(C, { backend: kind });
    const local = new Float32Array([1, 2, 3, 4, 5, 7]);
    expectSameBits("y", bn.forward(foreign.x, [2, 3]), twin.forward(local, [2, 3]));
    expectSameBits("dx", bn.backward(foreign.x).dx, twin.backward(local).dx);
    bn.loadStateDict({ ...bn.stateDict(), weight: foreign.w as unknown as Float32Array });
    expect(Array.from(bn.weight as Float32Array)).toEqual([2, 3, 4]);
    bn.dispose();
    twin.dispose();
  });

  it("use after dispose", () => {
    const bn = new BatchNorm(C, { backend: kind });
    const t = bn.tensor(SHAPE);
    bn.dispose();
    expect(() => bn.forward(t)).toThrow(/BatchNorm\.forward: the module was disposed/);
    expect(() => bn.tensor(SHAPE)).toThrow(/BatchNorm\.tensor: the module was disposed/);
    t.dispose();
    expect(() => t.data).toThrow(/Tensor \[4, 3, 2\] used after dispose\(\)/);
  });
});

describe.each(BACKENDS)("invalid options on the %s back end", (kind) => {
  const cases: [string, unknown, BatchNormOptions | null, ErrorConstructor, RegExp][] = [
    [
      "numFeatures 0",
      0,
      {},
      RangeError,
      /new BatchNorm: numFeatures must be a positive integer, got 0/,
    ],
    ["numFeatures -4", -4, {}, RangeError, /numFeatures must be a positive integer, got -4/],
    ["numFeatures 2.5", 2.5, {}, RangeError, /numFeatures must be a positive integer, got 2\.5/],
    [
      "numFeatures NaN",
      Number.NaN,
      {},
      RangeError,
      /numFeatures must be a positive integer, got NaN/,
    ],
    ["numFeatures '4'", "4", {}, RangeError, /numFeatures must be a positive integer, got "4"/],
    ["numFeatures Infinity", Number.POSITIVE_INFINITY, {}, RangeError, /got Infinity/],
    [
      "eps < 0",
      3,
      { eps: -1e-5 },
      RangeError,
      /options\.eps must be a finite number ≥ 0, got -0\.00001/,
    ],
    [
      "eps NaN",
      3,
      { eps: Number.NaN },
      RangeError,
      /options\.eps must be a finite number ≥ 0, got NaN/,
    ],
    [
      "eps Infinity",
      3,
      { eps: Number.POSITIVE_INFINITY },
      RangeError,
      /options\.eps .* got Infinity/,
    ],
    ["eps a string", 3, { eps: "1e-5" as never }, RangeError, /options\.eps .* got "1e-5"/],
    [
      "momentum < 0",
      3,
      { momentum: -0.1 },
      RangeError,
      /options\.momentum must be in \[0, 1\] or null, got -0\.1/,
    ],
    [
      "momentum > 1",
      3,
      { momentum: 1.5 },
      RangeError,
      /options\.momentum must be in \[0, 1\] or null, got 1\.5/,
    ],
    ["momentum NaN", 3, { momentum: Number.NaN }, RangeError, /options\.momentum .* got NaN/],
    [
      "momentum a string",
      3,
      { momentum: "0.1" as never },
      RangeError,
      /options\.momentum .* got "0\.1"/,
    ],
    [
      "an unknown layout",
      3,
      { layout: "NWHC" as never },
      RangeError,
      /options\.layout must be "NCHW" or "NHWC", got "NWHC"/,
    ],
    [
      "a lower-case layout",
      3,
      { layout: "nchw" as never },
      RangeError,
      /options\.layout .* got "nchw"/,
    ],
    [
      "an unknown backend",
      3,
      { backend: "gpu" as never },
      RangeError,
      /options\.backend must be "auto", "simd", "scalar" or "js", got "gpu"/,
    ],
    [
      "affine not a boolean",
      3,
      { affine: 1 as never },
      TypeError,
      /options\.affine must be a boolean, got 1/,
    ],
    [
      "trackRunningStats not a boolean",
      3,
      { trackRunningStats: "no" as never },
      TypeError,
      /options\.trackRunningStats must be a boolean, got "no"/,
    ],
    ["options null", 3, null, TypeError, /new BatchNorm: options must be an object, got null/],
  ];
  it.each(cases)("%s", (_, numFeatures, options, type, message) => {
    const before = live(kind);
    const memory = memoryBytes(kind);
    const opts = options === null ? null : { backend: kind, ...options };
    let thrown: unknown;
    try {
      new BatchNorm(numFeatures as number, opts as BatchNormOptions);
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(type);
    expect((thrown as Error).message).toMatch(message);
    expect(live(kind)).toBe(before); // nothing allocated, or all of it freed
    expect(memoryBytes(kind)).toBe(memory);
    // And the back end still makes working modules.
    const bn = new BatchNorm(2, { backend: kind });
    expect(bn.forward(new Float32Array([1, 2, 3, 4]), [2, 2])).toHaveLength(4);
    bn.dispose();
  });
});

/**
 * NaN and ±Infinity are data, not errors: they propagate as in PyTorch. A non-finite value in
 * a channel's batch makes that channel's statistics, outputs and input gradients NaN in
 * training (x − mean is ∞ − ∞ or NaN); in inference (fixed statistics) only the element itself
 * is affected. Other channels are computed independently and are bit-for-bit what they would
 * be without it.
 */
describe.each(BACKENDS)("NaN and Infinity propagate on the %s back end", (kind) => {
  const layouts = [
    ["NCHW", [4, 3, 5], (i: number) => Math.floor(i / 5) % 3],
    ["NHWC", [4, 5, 3], (i: number) => i % 3],
  ] as const;

  for (const [layout, shape, channel] of layouts) {
    for (const bad of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]) {
      it(`${bad} in the input, ${layout}`, () => {
        const n = 60;
        const rng = new Rng(3);
        const clean = rng.normals(n);
        const dy = rng.normals(n);
        const at = 17; // an element in the middle of the batch
        const c0 = channel(at);
        const x = clean.slice();
        x[at] = bad;
        const bn = new BatchNorm(3, { backend: kind, layout });
        const twin = new BatchNorm(3, { backend: kind, layout });

        // Training: the whole channel becomes NaN, the other channels are untouched.
        const y = bn.forward(x, [...shape]);
        const yClean = twin.forward(clean, [...shape]);
        for (let i = 0; i < n; i++) {
          if (channel(i) === c0) expect(y[i], `y[${i}]`).toBeNaN();
          else expect(Object.is(y[i], yClean[i]), `y[${i}]`).toBe(true);
        }
        expect(bn.numBatchesTracked).toBe(1); // a valid call: the state is updated
        for (const [name, got, want] of [
          ["runningMean", bn.runningMean, twin.runningMean],
          ["runningVar", bn.runningVar, twin.runningVar],
        ] as const) {
          for (let c = 0; c < 3; c++) {
            if (c === c0) expect(Number.isFinite(got?.[c]), `${name}[${c}]`).toBe(false);
            else expect(got?.[c], `${name}[${c}]`).toBe(want?.[c]);
          }
        }
        const g = bn.backward(dy);
        const gClean = twin.backward(dy);
        for (let i = 0; i < n; i++) {
          if (channel(i) === c0) expect(g.dx[i], `dx[${i}]`).toBeNaN();
          else expect(Object.is(g.dx[i], gClean.dx[i]), `dx[${i}]`).toBe(true);
        }
        for (let c = 0; c < 3; c++) {
          if (c === c0) expect(g.dWeight?.[c]).toBeNaN();
          else expect(g.dWeight?.[c]).toBe(gClean.dWeight?.[c]);
          // dBias = Σdy does not involve x.
          expect(g.dBias?.[c]).toBe(gClean.dBias?.[c]);
        }

        // Inference with finite running statistics: only the element itself is affected.
        bn.loadStateDict(twin.stateDict());
        bn.eval();
        twin.eval();
        const yi = bn.forward(x, [...shape]);
        const yiClean = twin.forward(clean, [...shape]);
        for (let i = 0; i < n; i++) {
          if (i !== at) expect(Object.is(yi[i], yiClean[i]), `y[${i}]`).toBe(true);
        }
        // weight 1 > 0: +∞ stays +∞, −∞ stays −∞, NaN stays NaN.
        expect(yi[at]).toBe(bad);
        bn.dispose();
        twin.dispose();
      });
    }
  }

  it("NaN in dy makes that channel's gradients NaN", () => {
    const bn = new BatchNorm(3, { backend: kind });
    const twin = new BatchNorm(3, { backend: kind });
    const rng = new Rng(9);
    const x = rng.normals(24);
    const dy = rng.normals(24);
    bn.forward(x, [4, 3, 2]);
    twin.forward(x, [4, 3, 2]);
    const bad = dy.slice();
    bad[2] = Number.NaN; // channel 1 of [4, 3, 2]
    const g = bn.backward(bad);
    const gClean = twin.backward(dy);
    for (let i = 0; i < 24; i++) {
      if (Math.floor(i / 2) % 3 === 1) expect(g.dx[i]).toBeNaN();
      else expect(Object.is(g.dx[i], gClean.dx[i])).toBe(true);
    }
    expect(g.dBias?.[1]).toBeNaN();
    expect(g.dWeight?.[1]).toBeNaN();
    expect(g.dBias?.[0]).toBe(gClean.dBias?.[0]);
    bn.dispose();
    twin.dispose();
  });

  it("a module whose statistics went NaN recovers with loadStateDict", () => {
    const bn = new BatchNorm(2, { backend: kind });
    bn.forward(new Float32Array([Number.NaN, 1, 2, 3]), [2, 2]);
    expect(bn.runningMean?.[0]).toBeNaN();
    const fresh = new BatchNorm(2, { backend: kind });
    bn.loadStateDict(fresh.stateDict());
    const x = new Float32Array([1, 2, 4, 8]);
    expect(bn.forward(x, [2, 2])).toEqual(fresh.forward(x, [2, 2]));
    expect(bn.stateDict()).toEqual(fresh.stateDict());
    bn.dispose();
    fresh.dispose();
  });
});
