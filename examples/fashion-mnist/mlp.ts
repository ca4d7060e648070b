/**
 * The paper's MNIST network (Ioffe & Szegedy 2015, §4.1) in plain TypeScript: fully connected
 * layers with sigmoid units, softmax with cross-entropy, and plain SGD. Batch normalization, where
 * enabled, is this library's {@link BatchNorm}, applied to each hidden layer's input to the
 * sigmoid: `h = sigmoid(BN(x·W + b))`.
 *
 * Tensors are row-major `Float32Array`s: a batch of activations is `[n, units]`, a weight matrix
 * `[inputs, outputs]`, so that every inner loop below runs along contiguous memory.
 *
 * @module
 */
import { BatchNorm, type BatchNormOptions } from "../../ts/index.node.js";

/** A small, fast, seedable PRNG (mulberry32) with Gaussian samples (Box–Muller). */
export class Rng {
  #state: number;
  #spare: number | undefined;

  constructor(seed: number) {
    this.#state = seed >>> 0;
  }

  /** Uniform in [0, 1). */
  next(): number {
    this.#state = (this.#state + 0x6d2b79f5) >>> 0;
    let t = this.#state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** Standard normal. */
  normal(): number {
    if (this.#spare !== undefined) {
      const s = this.#spare;
      this.#spare = undefined;
      return s;
    }
    const u = 1 - this.next(); // (0, 1]: log(u) is finite
    const r = Math.sqrt(-2 * Math.log(u));
    const theta = 2 * Math.PI * this.next();
    this.#spare = r * Math.sin(theta);
    return r * Math.cos(theta);
  }

  /** Shuffles `a` in place (Fisher–Yates). */
  shuffle(a: Uint32Array): void {
    for (let i = a.length - 1; i > 0; i--) {
      const j = Math.floor(this.next() * (i + 1));
      const t = a[i] as number;
      a[i] = a[j] as number;
      a[j] = t;
    }
  }
}

/** A fully connected layer `y = x·W + b`, with its gradients from the last backward. */
export interface Dense {
  readonly inputs: number;
  readonly outputs: number;
  /** `[inputs, outputs]`, row-major. */
  readonly weight: Float32Array;
  readonly bias: Float32Array;
  readonly gradWeight: Float32Array;
  readonly gradBias: Float32Array;
}

/** The initial parameters of a network: one weight matrix and bias vector per layer. */
export interface InitialWeights {
  readonly sizes: readonly number[];
  readonly weights: readonly Float32Array[];
  readonly biases: readonly Float32Array[];
}

/**
 * "Small random Gaussian values" (the paper): every weight ~ N(0, std²), biases 0, drawn from a
 * seeded generator so that both networks start from exactly the same weights.
 */
export function gaussianInit(sizes: readonly number[], std: number, seed: number): InitialWeights {
  const rng = new Rng(seed);
  const weights: Float32Array[] = [];
  const biases: Float32Array[] = [];
  for (let l = 0; l + 1 < sizes.length; l++) {
    const w = new Float32Array((sizes[l] as number) * (sizes[l + 1] as number));
    for (let i = 0; i < w.length; i++) w[i] = std * rng.normal();
    weights.push(w);
    biases.push(new Float32Array(sizes[l + 1] as number));
  }
  return { sizes: [...sizes], weights, biases };
}

/*
 * The three matrix products of a dense layer. JavaScript has no SIMD, so what makes these fast
 * is fewer loads and stores per multiply-add: every inner loop runs along contiguous memory, and
 * the products are computed in 4×4 tiles — four rows of the batch by four inputs — so that one
 * load or store of a row element serves four multiply-adds (a plain loop needs three memory
 * accesses per multiply-add). Tiles of zero inputs, common in the pixels of a Fashion-MNIST
 * image, are skipped.
 */

/** `y[n, outputs] = x[n, inputs]·W + b`. */
export function denseForward(layer: Dense, x: Float32Array, n: number, y: Float32Array): void {
  const { inputs: I, outputs: O, weight: W, bias: b } = layer;
  for (let r = 0; r < n; r++) y.set(b, r * O);
  let r = 0;
  for (; r + 4 <= n; r += 4) {
    const y0 = r * O;
    const y1 = y0 + O;
    const y2 = y1 + O;
    const y3 = y2 + O;
    const x0 = r * I;
    const x1 = x0 + I;
    const x2 = x1 + I;
    const x3 = x2 + I;
    let k = 0;
    for (; k + 4 <= I; k += 4) {
      // x[r..r+3, k..k+3]: a, b, c, d are the four rows.
      const a0 = x[x0 + k] as number;
      const a1 = x[x0 + k + 1] as number;
      const a2 = x[x0 + k + 2] as number;
      const a3 = x[x0 + k + 3] as number;
      const b0 = x[x1 + k] as number;
      const b1 = x[x1 + k + 1] as number;
      const b2 = x[x1 + k + 2] as number;
      const b3 = x[x1 + k + 3] as number;
      const c0 = x[x2 + k] as number;
      const c1 = x[x2 + k + 1] as number;
      const c2 = x[x2 + k + 2] as number;
      const c3 = x[x2 + k + 3] as number;
      const d0 = x[x3 + k] as number;
      const d1 = x[x3 + k + 1] as number;
      const d2 = x[x3 + k + 2] as number;
      const d3 = x[x3 + k + 3] as number;
      if (
        zero4(a0, a1, a2, a3) &&
        zero4(b0, b1, b2, b3) &&
        zero4(c0, c1, c2, c3) &&
        zero4(d0, d1, d2, d3)
      )
        continue;
      const w0 = k * O;
      const w1 = w0 + O;
      const w2 = w1 + O;
      const w3 = w2 + O;
      for (let j = 0; j < O; j++) {
        const p = W[w0 + j] as number;
        const q = W[w1 + j] as number;
        const s = W[w2 + j] as number;
        const t = W[w3 + j] as number;
        y[y0 + j] = (y[y0 + j] as number) + a0 * p + a1 * q + a2 * s + a3 * t;
        y[y1 + j] = (y[y1 + j] as number) + b0 * p + b1 * q + b2 * s + b3 * t;
        y[y2 + j] = (y[y2 + j] as number) + c0 * p + c1 * q + c2 * s + c3 * t;
        y[y3 + j] = (y[y3 + j] as number) + d0 * p + d1 * q + d2 * s + d3 * t;
      }
    }
    for (; k < I; k++) {
      for (let i = 0; i < 4; i++) axpy(x[x0 + i * I + k] as number, W, k * O, y, y0 + i * O, O);
    }
  }
  for (; r < n; r++) {
    for (let k = 0; k < I; k++) axpy(x[r * I + k] as number, W, k * O, y, r * O, O);
  }
}

/** Whether four values are all zero. */
function zero4(a: number, b: number, c: number, d: number): boolean {
  return a === 0 && b === 0 && c === 0 && d === 0;
}

/** `y[yo .. yo+len) += a·x[xo .. xo+len)` (the tails of the tiled loops). */
function axpy(a: number, x: Float32Array, xo: number, y: Float32Array, yo: number, len: number) {
  if (a === 0) return;
  for (let j = 0; j < len; j++) y[yo + j] = (y[yo + j] as number) + a * (x[xo + j] as number);
}

/**
 * Gradients of `y = x·W + b` for the upstream gradient `dy`: `gradWeight = xᵀ·dy`,
 * `gradBias = Σ dy` (both overwritten), and, when `dx` is given, `dx = dy·Wᵀ`.
 */
export function denseBackward(
  layer: Dense,
  x: Float32Array,
  dy: Float32Array,
  n: number,
  dx: Float32Array | null,
): void {
  const { inputs: I, outputs: O, weight: W, gradWeight: gW, gradBias: gb } = layer;
  gb.fill(0);
  for (let r = 0; r < n; r++) axpy(1, dy, r * O, gb, 0, O);
  // gradWeight[k, :] = Σ_r x[r, k]·dy[r, :], in tiles of four rows r by four inputs k.
  gW.fill(0);
  let r = 0;
  for (; r + 4 <= n; r += 4) {
    const e0 = r * O;
    const e1 = e0 + O;
    const e2 = e1 + O;
    const e3 = e2 + O;
    const x0 = r * I;
    const x1 = x0 + I;
    const x2 = x1 + I;
    const x3 = x2 + I;
    let k = 0;
    for (; k + 4 <= I; k += 4) {
      // x[r..r+3, k..k+3] by input k: a, b, c, d are the four inputs.
      const a0 = x[x0 + k] as number;
      const a1 = x[x1 + k] as number;
      const a2 = x[x2 + k] as number;
      const a3 = x[x3 + k] as number;
      const b0 = x[x0 + k + 1] as number;
      const b1 = x[x1 + k + 1] as number;
      const b2 = x[x2 + k + 1] as number;
      const b3 = x[x3 + k + 1] as number;
      const c0 = x[x0 + k + 2] as number;
      const c1 = x[x1 + k + 2] as number;
      const c2 = x[x2 + k + 2] as number;
      const c3 = x[x3 + k + 2] as number;
      const d0 = x[x0 + k + 3] as number;
      const d1 = x[x1 + k + 3] as number;
      const d2 = x[x2 + k + 3] as number;
      const d3 = x[x3 + k + 3] as number;
      if (
        zero4(a0, a1, a2, a3) &&
        zero4(b0, b1, b2, b3) &&
        zero4(c0, c1, c2, c3) &&
        zero4(d0, d1, d2, d3)
      )
        continue;
      const g0 = k * O;
      const g1 = g0 + O;
      const g2 = g1 + O;
      const g3 = g2 + O;
      for (let j = 0; j < O; j++) {
        const p = dy[e0 + j] as number;
        const q = dy[e1 + j] as number;
        const s = dy[e2 + j] as number;
        const t = dy[e3 + j] as number;
        gW[g0 + j] = (gW[g0 + j] as number) + a0 * p + a1 * q + a2 * s + a3 * t;
        gW[g1 + j] = (gW[g1 + j] as number) + b0 * p + b1 * q + b2 * s + b3 * t;
        gW[g2 + j] = (gW[g2 + j] as number) + c0 * p + c1 * q + c2 * s + c3 * t;
        gW[g3 + j] = (gW[g3 + j] as number) + d0 * p + d1 * q + d2 * s + d3 * t;
      }
    }
    for (; k < I; k++) {
      for (let i = 0; i < 4; i++) axpy(x[x0 + i * I + k] as number, dy, e0 + i * O, gW, k * O, O);
    }
  }
  for (; r < n; r++) {
    for (let k = 0; k < I; k++) axpy(x[r * I + k] as number, dy, r * O, gW, k * O, O);
  }
  if (dx === null) return;
  // dx[r, k] = dy[r, :]·W[k, :], four rows r at a time.
  r = 0;
  for (; r + 4 <= n; r += 4) {
    const e0 = r * O;
    const e1 = e0 + O;
    const e2 = e1 + O;
    const e3 = e2 + O;
    const xo = r * I;
    for (let k = 0; k < I; k++) {
      const wo = k * O;
      let s0 = 0;
      let s1 = 0;
      let s2 = 0;
      let s3 = 0;
      for (let j = 0; j < O; j++) {
        const w = W[wo + j] as number;
        s0 += (dy[e0 + j] as number) * w;
        s1 += (dy[e1 + j] as number) * w;
        s2 += (dy[e2 + j] as number) * w;
        s3 += (dy[e3 + j] as number) * w;
      }
      dx[xo + k] = s0;
      dx[xo + I + k] = s1;
      dx[xo + 2 * I + k] = s2;
      dx[xo + 3 * I + k] = s3;
    }
  }
  for (; r < n; r++) {
    const eo = r * O;
    const xo = r * I;
    for (let k = 0; k < I; k++) {
      const wo = k * O;
      let s = 0;
      for (let j = 0; j < O; j++) s += (dy[eo + j] as number) * (W[wo + j] as number);
      dx[xo + k] = s;
    }
  }
}

/** `y = 1 / (1 + e^−x)`, element-wise (`y` may be `x`). */
export function sigmoid(x: Float32Array, y: Float32Array): void {
  for (let i = 0; i < x.length; i++) y[i] = 1 / (1 + Math.exp(-(x[i] as number)));
}

/**
 * Softmax with cross-entropy, averaged over the batch. Writes the gradient of the mean loss with
 * respect to the logits (`(softmax − onehot) / batch`) into `dLogits` when given; `batch` is `n`
 * unless these rows are a replica's part of a larger batch (data-parallel training).
 *
 * @returns the summed loss over the batch and the number of correct arg-max predictions.
 */
export function softmaxCrossEntropy(
  logits: Float32Array,
  labels: ArrayLike<number>,
  n: number,
  classes: number,
  dLogits: Float32Array | null,
  batch = n,
): { lossSum: number; correct: number } {
  let lossSum = 0;
  let correct = 0;
  for (let r = 0; r < n; r++) {
    const o = r * classes;
    let max = -Infinity;
    let argmax = 0;
    for (let j = 0; j < classes; j++) {
      const v = logits[o + j] as number;
      if (v > max) {
        max = v;
        argmax = j;
      }
    }
    let sum = 0;
    for (let j = 0; j < classes; j++) sum += Math.exp((logits[o + j] as number) - max);
    const label = labels[r] as number;
    const logSum = max + Math.log(sum);
    lossSum += logSum - (logits[o + label] as number);
    if (argmax === label) correct++;
    if (dLogits !== null) {
      for (let j = 0; j < classes; j++) {
        const p = Math.exp((logits[o + j] as number) - logSum);
        dLogits[o + j] = (p - (j === label ? 1 : 0)) / batch;
      }
    }
  }
  return { lossSum, correct };
}

/** Per-batch-size activation buffers. */
interface Buffers {
  /** Dense outputs `x·W + b` of every layer (the last is the logits). */
  z: Float32Array[];
  /** Sigmoid outputs of the hidden layers. */
  h: Float32Array[];
  /** Gradient scratch: one per layer width. */
  dh: Float32Array[];
  dLogits: Float32Array;
}

/**
 * Data-parallel training: the network holds one replica's rows of a batch of `batchSize`, and
 * `reduce` replaces the replica's gradients of the dense layers and its batch result by the whole
 * batch's (an all-reduce). BatchNorm's own gradients are the whole batch's already (`sync`).
 */
export interface DataParallel {
  readonly batchSize: number;
  reduce(grads: readonly Float32Array[], result: BatchResult): BatchResult;
}

/** One step's or one evaluation's result. */
export interface BatchResult {
  /** Loss summed over the batch. */
  lossSum: number;
  correct: number;
}

/**
 * The paper's network: fully connected sigmoid layers, optionally with batch normalization
 * before each sigmoid, and a softmax output layer.
 */
export class Network {
  readonly sizes: readonly number[];
  readonly layers: Dense[];
  /** One BatchNorm per hidden layer, or none. */
  readonly norms: BatchNorm[];
  /** Sigmoid inputs (BN outputs, or the dense outputs without BN) of the last forward. */
  readonly sigmoidInputs: Float32Array[] = [];
  #buffers = new Map<number, Buffers>();

  /**
   * @param init initial weights, copied (so two networks can start from the same ones).
   * @param batchNorm insert a {@link BatchNorm} (2-D `[n, units]` input) before each sigmoid;
   *   options make it one with those options (`sync` for data-parallel training, the
   *   small-batch experiment's variants).
   */
  constructor(init: InitialWeights, batchNorm: boolean | BatchNormOptions) {
    this.sizes = init.sizes;
    this.layers = init.weights.map((w, l) => {
      const inputs = init.sizes[l] as number;
      const outputs = init.sizes[l + 1] as number;
      return {
        inputs,
        outputs,
        weight: w.slice(),
        bias: (init.biases[l] as Float32Array).slice(),
        gradWeight: new Float32Array(inputs * outputs),
        gradBias: new Float32Array(outputs),
      };
    });
    const hidden = this.sizes.slice(1, -1);
    const options = typeof batchNorm === "object" ? batchNorm : {};
    this.norms = batchNorm ? hidden.map((units) => new BatchNorm(units, options)) : [];
  }

  get batchNorm(): boolean {
    return this.norms.length > 0;
  }

  get classes(): number {
    return this.sizes[this.sizes.length - 1] as number;
  }

  /** Training mode (BN normalizes with batch statistics and updates its running averages). */
  train(): void {
    for (const bn of this.norms) bn.train();
  }

  /** Inference mode (BN normalizes with its running averages, as in Algorithm 2). */
  eval(): void {
    for (const bn of this.norms) bn.eval();
  }

  #buffersFor(n: number): Buffers {
    let b = this.#buffers.get(n);
    if (b === undefined) {
      const widths = this.sizes.slice(1);
      b = {
        z: widths.map((w) => new Float32Array(n * w)),
        h: widths.slice(0, -1).map((w) => new Float32Array(n * w)),
        dh: widths.slice(0, -1).map((w) => new Float32Array(n * w)),
        dLogits: new Float32Array(n * this.classes),
      };
      this.#buffers.set(n, b);
    }
    return b;
  }

  /**
   * Forward pass on `n` rows of `x`; returns the logits. Keeps every layer's activations for
   * {@link Network.backward}, and the sigmoid inputs in {@link Network.sigmoidInputs}.
   */
  forward(x: Float32Array, n: number): Float32Array {
    const b = this.#buffersFor(n);
    const hiddenCount = this.layers.length - 1;
    let input = x;
    for (let l = 0; l < this.layers.length; l++) {
      const z = b.z[l] as Float32Array;
      denseForward(this.layers[l] as Dense, input, n, z);
      if (l === hiddenCount) break;
      const bn = this.norms[l];
      const u = bn === undefined ? z : bn.forward(z, [n, this.sizes[l + 1] as number]);
      this.sigmoidInputs[l] = u;
      const h = b.h[l] as Float32Array;
      sigmoid(u, h);
      input = h;
    }
    return b.z[hiddenCount] as Float32Array;
  }

  /**
   * One SGD step on a mini-batch: forward, softmax cross-entropy, backward through the dense
   * layers, sigmoids and batch norms, then `θ ← θ − lr·∂loss/∂θ` for every parameter (dense
   * weights and biases, BN's weight γ and bias β).
   */
  trainStep(
    x: Float32Array,
    labels: ArrayLike<number>,
    n: number,
    lr: number,
    parallel?: DataParallel,
  ): BatchResult {
    const b = this.#buffersFor(n);
    const logits = this.forward(x, n);
    const batch = parallel?.batchSize ?? n;
    let result = softmaxCrossEntropy(logits, labels, n, this.classes, b.dLogits, batch);
    const bnGrads: { dWeight: Float32Array | null; dBias: Float32Array | null }[] = [];
    let dy = b.dLogits;
    for (let l = this.layers.length - 1; l >= 0; l--) {
      const input = l === 0 ? x : (b.h[l - 1] as Float32Array);
      const dInput = l === 0 ? null : (b.dh[l - 1] as Float32Array);
      denseBackward(this.layers[l] as Dense, input, dy, n, dInput);
      if (dInput === null) break;
      // Through the sigmoid of hidden layer l−1: dσ/du = h·(1 − h).
      const h = b.h[l - 1] as Float32Array;
      for (let i = 0; i < dInput.length; i++) {
        const hv = h[i] as number;
        dInput[i] = (dInput[i] as number) * hv * (1 - hv);
      }
      const bn = this.norms[l - 1];
      if (bn === undefined) {
        dy = dInput;
      } else {
        const g = bn.backward(dInput);
        bnGrads[l - 1] = g;
        dy = g.dx;
      }
    }
    if (parallel !== undefined) {
      result = parallel.reduce(
        this.layers.flatMap((l) => [l.gradWeight, l.gradBias]),
        result,
      );
    }
    for (const layer of this.layers) {
      sgd(layer.weight, layer.gradWeight, lr);
      sgd(layer.bias, layer.gradBias, lr);
    }
    this.norms.forEach((bn, l) => {
      const g = bnGrads[l];
      if (g?.dWeight && g.dBias && bn.weight && bn.bias) {
        sgd(bn.weight, g.dWeight, lr);
        sgd(bn.bias, g.dBias, lr);
      }
    });
    return result;
  }

  /** Frees the batch norms' wasm memory. */
  dispose(): void {
    for (const bn of this.norms) bn.dispose();
  }
}

function sgd(param: Float32Array, grad: Float32Array, lr: number): void {
  for (let i = 0; i < param.length; i++) param[i] = (param[i] as number) - lr * (grad[i] as number);
}
