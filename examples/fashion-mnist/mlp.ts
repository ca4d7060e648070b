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
import { BatchNorm } from "../../ts/index.node.js";

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
 * The three matrix products of a dense layer. JavaScript has no SIMD, so what makes these fast is
 * fewer loads and stores per multiply-add: each inner loop runs along contiguous memory and works
 * on four rows (or four inputs) at once, so that one store serves four multiply-adds. Inputs
 * that are zero — most pixels of a Fashion-MNIST image — are skipped four at a time.
 */

/** `y[n, outputs] = x[n, inputs]·W + b`. */
export function denseForward(layer: Dense, x: Float32Array, n: number, y: Float32Array): void {
  const { inputs: I, outputs: O, weight: W, bias: b } = layer;
  for (let r = 0; r < n; r++) {
    const yo = r * O;
    const xo = r * I;
    for (let j = 0; j < O; j++) y[yo + j] = b[j] as number;
    let k = 0;
    for (; k + 4 <= I; k += 4) {
      const x0 = x[xo + k] as number;
      const x1 = x[xo + k + 1] as number;
      const x2 = x[xo + k + 2] as number;
      const x3 = x[xo + k + 3] as number;
      if (x0 === 0 && x1 === 0 && x2 === 0 && x3 === 0) continue;
      const w0 = k * O;
      const w1 = w0 + O;
      const w2 = w1 + O;
      const w3 = w2 + O;
      for (let j = 0; j < O; j++) {
        y[yo + j] =
          (y[yo + j] as number) +
          x0 * (W[w0 + j] as number) +
          x1 * (W[w1 + j] as number) +
          x2 * (W[w2 + j] as number) +
          x3 * (W[w3 + j] as number);
      }
    }
    for (; k < I; k++) {
      const xv = x[xo + k] as number;
      const wo = k * O;
      for (let j = 0; j < O; j++) y[yo + j] = (y[yo + j] as number) + xv * (W[wo + j] as number);
    }
  }
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
  for (let r = 0; r < n; r++) {
    const yo = r * O;
    for (let j = 0; j < O; j++) gb[j] = (gb[j] as number) + (dy[yo + j] as number);
  }
  // gradWeight[k, :] = Σ_r x[r, k]·dy[r, :], four rows r at a time.
  gW.fill(0);
  let r = 0;
  for (; r + 4 <= n; r += 4) {
    const d0 = r * O;
    const d1 = d0 + O;
    const d2 = d1 + O;
    const d3 = d2 + O;
    const xo = r * I;
    for (let k = 0; k < I; k++) {
      const x0 = x[xo + k] as number;
      const x1 = x[xo + I + k] as number;
      const x2 = x[xo + 2 * I + k] as number;
      const x3 = x[xo + 3 * I + k] as number;
      if (x0 === 0 && x1 === 0 && x2 === 0 && x3 === 0) continue;
      const go = k * O;
      for (let j = 0; j < O; j++) {
        gW[go + j] =
          (gW[go + j] as number) +
          x0 * (dy[d0 + j] as number) +
          x1 * (dy[d1 + j] as number) +
          x2 * (dy[d2 + j] as number) +
          x3 * (dy[d3 + j] as number);
      }
    }
  }
  for (; r < n; r++) {
    const yo = r * O;
    const xo = r * I;
    for (let k = 0; k < I; k++) {
      const xv = x[xo + k] as number;
      if (xv === 0) continue;
      const go = k * O;
      for (let j = 0; j < O; j++) gW[go + j] = (gW[go + j] as number) + xv * (dy[yo + j] as number);
    }
  }
  if (dx === null) return;
  // dx[r, k] = dy[r, :]·W[k, :], four rows r at a time.
  r = 0;
  for (; r + 4 <= n; r += 4) {
    const d0 = r * O;
    const d1 = d0 + O;
    const d2 = d1 + O;
    const d3 = d2 + O;
    const xo = r * I;
    for (let k = 0; k < I; k++) {
      const wo = k * O;
      let s0 = 0;
      let s1 = 0;
      let s2 = 0;
      let s3 = 0;
      for (let j = 0; j < O; j++) {
        const w = W[wo + j] as number;
        s0 += (dy[d0 + j] as number) * w;
        s1 += (dy[d1 + j] as number) * w;
        s2 += (dy[d2 + j] as number) * w;
        s3 += (dy[d3 + j] as number) * w;
      }
      dx[xo + k] = s0;
      dx[xo + I + k] = s1;
      dx[xo + 2 * I + k] = s2;
      dx[xo + 3 * I + k] = s3;
    }
  }
  for (; r < n; r++) {
    const yo = r * O;
    const xo = r * I;
    for (let k = 0; k < I; k++) {
      const wo = k * O;
      let s = 0;
      for (let j = 0; j < O; j++) s += (dy[yo + j] as number) * (W[wo + j] as number);
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
 * respect to the logits (`(softmax − onehot) / n`) into `dLogits` when given.
 *
 * @returns the summed loss over the batch and the number of correct arg-max predictions.
 */
export function softmaxCrossEntropy(
  logits: Float32Array,
  labels: ArrayLike<number>,
  n: number,
  classes: number,
  dLogits: Float32Array | null,
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
        dLogits[o + j] = (p - (j === label ? 1 : 0)) / n;
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
   * @param batchNorm insert a {@link BatchNorm} (2-D `[n, units]` input) before each sigmoid.
   */
  constructor(init: InitialWeights, batchNorm: boolean) {
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
    this.norms = batchNorm ? hidden.map((units) => new BatchNorm(units)) : [];
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
  trainStep(x: Float32Array, labels: ArrayLike<number>, n: number, lr: number): BatchResult {
    const b = this.#buffersFor(n);
    const logits = this.forward(x, n);
    const result = softmaxCrossEntropy(logits, labels, n, this.classes, b.dLogits);
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
