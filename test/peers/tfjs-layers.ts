/**
 * Runs a TF.js layers `batchNormalization` layer (tfjs-layers 4.22 on the CPU back end, float32)
 * inside a one-layer model, and reads its four weights back: inference, a training-mode call,
 * and one step of `fit`.
 */
import * as tf from "@tensorflow/tfjs-core";
import "@tensorflow/tfjs-backend-cpu";
import * as tfl from "@tensorflow/tfjs-layers";

/** A Keras BatchNormalization's four weights, in Keras's order. */
export interface KerasBnWeights {
  gamma: Float32Array;
  beta: Float32Array;
  movingMean: Float32Array;
  movingVariance: Float32Array;
}

export interface TfjsBnOptions {
  /** Channel axis; left out = TF.js's default (−1, channels last). */
  axis?: number;
  /** Left out = TF.js's default. */
  momentum?: number;
  /** Left out = TF.js's default. */
  epsilon?: number;
  /** Learnable β; left out = TF.js's default (true). */
  center?: boolean;
  /** Learnable γ; left out = TF.js's default (true). */
  scale?: boolean;
  /**
   * Initial weights; left out = TF.js's initializers. A list is `setWeights`'s order, without
   * γ and β when `scale` and `center` are false (as `BatchNorm.toKeras()` gives them).
   */
  weights?: KerasBnWeights | readonly Float32Array[];
}

export interface TfjsBn {
  layer: tfl.layers.Layer;
  model: tfl.Sequential;
  /** The four weights now, in the layer's own order (`getWeights()`). */
  read(): KerasBnWeights;
  /** The weights now as `getWeights()` lists them (two to four). */
  readList(): Float32Array[];
  /** The weights' names, in the layer's own order. */
  names(): string[];
  /** A forward on `x` (shape `[N, ...]` as built), in training or inference mode. */
  call(x: Float32Array, training: boolean): Float32Array;
  /** One `fit` epoch with the whole of `x` as one batch, SGD with learning rate 0. */
  fitOnce(x: Float32Array): Promise<void>;
  dispose(): void;
}

let ready: Promise<boolean> | undefined;

/** Selects TF.js's CPU back end (float32, plain JS kernels), once. */
export async function tfjsReady(): Promise<void> {
  // IS_TEST silences tfjs-backend-cpu's one-time advice to install tfjs-node.
  tf.env().set("IS_TEST", true);
  ready ??= tf.setBackend("cpu");
  await ready;
}

/** A batchNormalization layer built for inputs of `shape` (`[N, ...]`). */
export async function tfjsBatchNorm(
  shape: readonly number[],
  options: TfjsBnOptions = {},
): Promise<TfjsBn> {
  await tfjsReady();
  // Every option left out takes TF.js's default, which the tests then pin down.
  const config: Record<string, number | boolean> = {};
  for (const key of ["axis", "momentum", "epsilon", "center", "scale"] as const) {
    if (options[key] !== undefined) config[key] = options[key];
  }
  const layer = tfl.layers.batchNormalization({ ...config, inputShape: shape.slice(1) });
  const model = tfl.sequential({ layers: [layer] });
  const w = options.weights;
  if (w) {
    const list = "gamma" in w ? [w.gamma, w.beta, w.movingMean, w.movingVariance] : w;
    const tensors = list.map((a) => tf.tensor1d(a));
    layer.setWeights(tensors); // copies them
    tf.dispose(tensors);
  }
  const tensor = (x: Float32Array) => tf.tensor(x, [...shape]);
  const readList = () =>
    layer.getWeights().map((t) => Float32Array.from(t.dataSync() as Float32Array));
  return {
    layer,
    model,
    readList,
    read() {
      const [gamma, beta, movingMean, movingVariance] = readList();
      if (!gamma || !beta || !movingMean || !movingVariance) throw new Error("four weights");
      return { gamma, beta, movingMean, movingVariance };
    },
    names: () => layer.weights.map((v) => v.name),
    call(x, training) {
      return tf.tidy(() => {
        const y = layer.apply(tensor(x), { training }) as tf.Tensor;
        return Float32Array.from(y.dataSync() as Float32Array);
      });
    },
    async fitOnce(x) {
      // Learning rate 0: gamma and beta stay, so only the moving statistics can change.
      model.compile({ optimizer: tf.train.sgd(0), loss: "meanSquaredError" });
      const xs = tensor(x);
      const ys = tf.zerosLike(xs);
      await model.fit(xs, ys, {
        batchSize: shape[0] as number,
        epochs: 1,
        shuffle: false,
        verbose: 0,
      });
      tf.dispose([xs, ys]);
    },
    dispose: () => model.dispose(),
  };
}
