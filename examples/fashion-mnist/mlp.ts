/**
 * The paper's MNIST network (Ioffe & Szegedy 2015, §4.1) in plain TypeScript: fully connected
 * layers (`dense.ts`) with sigmoid units, softmax with cross-entropy, and plain SGD. Batch
 * normalization, where enabled, is this library's {@link BatchNorm}, applied to each hidden
 * layer's input to the sigmoid: `h = sigmoid(BN(x·W + b))`.
 *
 * Tensors are row-major `Float32Array`s: a batch of activations is `[n, units]`, a weight matrix
 * `[inputs, outputs]`, so that every inner loop runs along contiguous memory.
 *
 * @module
 */
import { BatchNorm, type BatchNormOptions } from "../../ts/index.node.js";
import { type Dense, denseBackward, denseForward } from "./dense.js";
import type { InitialWeights } from "./random.js";

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
