/**
 * The Fashion-MNIST demo (examples/fashion-mnist): a short run on a slice of the dataset (or on
 * generated images when the dataset is not installed) must lower the loss of both networks, and
 * the BN network in inference mode must normalize with the running statistics, not the batch's.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { beforeAll, describe, expect, it } from "vitest";
import { replicaRows } from "../examples/fashion-mnist/data-parallel.js";
import { type Dense, denseBackward, denseForward } from "../examples/fashion-mnist/dense.js";
import {
  DEBIAN_DATA_DIR,
  encodeIdx,
  hasDataset,
  type ImageSet,
  loadFashionMnist,
  parseIdx,
} from "../examples/fashion-mnist/idx.js";
import { Network } from "../examples/fashion-mnist/mlp.js";
import { runExperimentParallel } from "../examples/fashion-mnist/parallel.js";
import { gaussianInit, Rng } from "../examples/fashion-mnist/random.js";
import { charts, summary, writeReport } from "../examples/fashion-mnist/report.js";
import {
  type ExperimentResult,
  gatherBatch,
  quantile,
  resolveSettings,
  runExperiment,
} from "../examples/fashion-mnist/train.js";
import { initFromDist } from "./setup-backends.js";

/** Ten classes of 28×28 images: a fixed random blob pattern per class, plus noise. */
function generated(count: number, seed: number): ImageSet {
  const pixels = 784;
  const protoRng = new Rng(12345);
  const prototypes = Array.from({ length: 10 }, () =>
    Float64Array.from({ length: pixels }, () =>
      protoRng.next() < 0.3 ? 0.5 + protoRng.next() / 2 : 0,
    ),
  );
  const rng = new Rng(seed);
  const images = new Uint8Array(count * pixels);
  const labels = new Uint8Array(count);
  for (let i = 0; i < count; i++) {
    const label = i % 10;
    labels[i] = label;
    const proto = prototypes[label] as Float64Array;
    for (let k = 0; k < pixels; k++) {
      const v = (proto[k] as number) + 0.25 * rng.normal();
      images[i * pixels + k] = Math.round(255 * Math.min(1, Math.max(0, v)));
    }
  }
  return { count, pixels, images, labels };
}

/** The first `count` images of a set. */
function slice(set: ImageSet, count: number): ImageSet {
  return {
    count,
    pixels: set.pixels,
    images: set.images.subarray(0, count * set.pixels),
    labels: set.labels.subarray(0, count),
  };
}

// DEMO_TEST_GENERATED=1 forces the generated images, to check that path where the dataset is.
const realData = hasDataset(DEBIAN_DATA_DIR) && process.env.DEMO_TEST_GENERATED !== "1";
const data = realData
  ? (() => {
      const all = loadFashionMnist(DEBIAN_DATA_DIR);
      return { train: slice(all.train, 6000), test: slice(all.test, 1000) };
    })()
  : { train: generated(3000, 1), test: generated(500, 2) };

beforeAll(async () => {
  await initFromDist();
});

describe(`Fashion-MNIST demo (${realData ? "a slice of the dataset" : "generated images"})`, () => {
  let result: ExperimentResult;

  it("trains both networks: the loss goes down", () => {
    result = runExperiment({ ...data, steps: 300, evalEvery: 100, evalSize: 500 });
    for (const net of [result.plain, result.bn]) {
      expect(net.train.map((t) => t.step)).toEqual([100, 200, 300]);
      const first = net.train[0]?.loss as number;
      const last = net.train[net.train.length - 1]?.loss as number;
      expect(last, net.name).toBeLessThan(first);
      expect(net.evals.map((e) => e.step)).toEqual([0, 100, 200, 300]);
    }
    // The paper's point already shows: BN is ahead after a few hundred steps.
    const final = (r: typeof result.plain) => r.evals[r.evals.length - 1]?.accuracy as number;
    expect(final(result.bn)).toBeGreaterThan(0.6);
    expect(final(result.bn)).toBeGreaterThan(final(result.plain));
    // Percentiles are ordered.
    for (const e of [...result.plain.evals, ...result.bn.evals]) {
      expect(e.p15).toBeLessThanOrEqual(e.p50);
      expect(e.p50).toBeLessThanOrEqual(e.p85);
    }
  });

  it("evaluates in inference mode with the running statistics, not the batch's", () => {
    const settings = resolveSettings(data);
    const init = gaussianInit(settings.sizes, settings.initStd, 7);
    const net = new Network(init, true);
    const n = 60;
    const x = new Float32Array(n * 784);
    const labels = new Uint8Array(n);
    const order = Uint32Array.from({ length: data.train.count }, (_, i) => i);
    for (let s = 0; s < 20; s++) {
      gatherBatch(data.train, order, s * n, n, x, labels);
      net.trainStep(x, labels, n, settings.learningRate);
    }
    const bn = net.norms[0];
    if (!bn?.runningMean || !bn.runningVar || !bn.weight || !bn.bias) throw new Error("no BN");
    expect(bn.numBatchesTracked).toBe(20);
    const runningMean = bn.runningMean.slice();
    const runningVar = bn.runningVar.slice();

    gatherBatch(data.test, order, 0, n, x, labels);
    const units = 100;
    const z = new Float32Array(n * units); // the first layer's dense output: BN's input
    denseForward(net.layers[0] as Dense, x, n, z);
    net.eval();
    net.forward(x, n);
    const u = (net.sigmoidInputs[0] as Float32Array).slice();

    // References in float64: Algorithm 2 with the running statistics, and batch statistics.
    let maxRunning = 0;
    let maxBatch = 0;
    for (let c = 0; c < units; c++) {
      let mean = 0;
      for (let r = 0; r < n; r++) mean += z[r * units + c] as number;
      mean /= n;
      let variance = 0;
      for (let r = 0; r < n; r++) variance += ((z[r * units + c] as number) - mean) ** 2;
      variance /= n;
      const w = bn.weight[c] as number;
      const b = bn.bias[c] as number;
      for (let r = 0; r < n; r++) {
        const v = z[r * units + c] as number;
        const got = u[r * units + c] as number;
        const viaRunning =
          (w * (v - (runningMean[c] as number))) / Math.sqrt((runningVar[c] as number) + bn.eps) +
          b;
        const viaBatch = (w * (v - mean)) / Math.sqrt(variance + bn.eps) + b;
        maxRunning = Math.max(maxRunning, Math.abs(got - viaRunning));
        maxBatch = Math.max(maxBatch, Math.abs(got - viaBatch));
      }
    }
    expect(maxRunning).toBeLessThan(1e-4);
    expect(maxBatch).toBeGreaterThan(0.05);
    // Inference leaves the running statistics alone, and an example's output does not depend
    // on the rest of the batch (a batch of one works, which training mode would refuse).
    expect(bn.runningMean).toEqual(runningMean);
    expect(bn.runningVar).toEqual(runningVar);
    expect(bn.numBatchesTracked).toBe(20);
    net.forward(x.subarray(0, 784), 1);
    const single = net.sigmoidInputs[0] as Float32Array;
    for (let c = 0; c < units; c++) expect(single[c]).toBeCloseTo(u[c] as number, 5);
    net.dispose();
  });

  it("writes the report: charts, JSON and summary", () => {
    const dir = mkdtempSync(join(tmpdir(), "demo-report-"));
    try {
      const paths = writeReport(dir, result, {
        dataDir: "test",
        threads: 1,
        backend: "simd",
        node: process.version,
        date: "",
      });
      expect(paths.map((p) => p.slice(dir.length + 1)).sort()).toEqual([
        "accuracy.svg",
        "results.json",
        "sigmoid-input-with-bn.svg",
        "sigmoid-input-without-bn.svg",
        "summary.txt",
        "train-loss.svg",
      ]);
      const json = JSON.parse(readFileSync(join(dir, "results.json"), "utf8"));
      expect(json.bn.evals).toHaveLength(4);
      expect(json.summary.finalAccuracy.bn).toBe(result.bn.evals[3]?.accuracy);
      for (const svg of Object.values(charts(result))) {
        expect(svg.startsWith("<svg")).toBe(true);
        expect(svg).not.toMatch(/NaN|undefined/);
      }
      expect(summary(result)).toMatch(/test accuracy at step 300 /);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("pieces of the demo", () => {
  it("reads IDX files, gzipped or not", () => {
    const bytes = Uint8Array.from({ length: 2 * 3 * 4 }, (_, i) => i);
    const idx = encodeIdx([2, 3, 4], bytes);
    for (const file of [idx, new Uint8Array(gzipSync(idx))]) {
      const parsed = parseIdx(file);
      expect(parsed.shape).toEqual([2, 3, 4]);
      expect([...parsed.data]).toEqual([...bytes]);
    }
    expect(() => parseIdx(idx.subarray(0, idx.length - 1))).toThrow(
      /needs 40 bytes, the file has 39/,
    );
    expect(() => parseIdx(Uint8Array.of(1, 2, 3, 4))).toThrow(/not an IDX file/);
  });

  it("computes the dense layer's products like a naive float64 reference, at every tile tail", () => {
    const rng = new Rng(3);
    for (const [n, I, O] of [
      [8, 12, 5],
      [7, 9, 3],
      [1, 4, 4],
      [5, 1, 6],
    ] as const) {
      const rand = (len: number, zeros: number) =>
        Float32Array.from({ length: len }, () => (rng.next() < zeros ? 0 : rng.normal()));
      const layer: Dense = {
        inputs: I,
        outputs: O,
        weight: rand(I * O, 0),
        bias: rand(O, 0),
        gradWeight: new Float32Array(I * O),
        gradBias: new Float32Array(O),
      };
      const x = rand(n * I, 0.5); // zeros exercise the skipped tiles
      const dy = rand(n * O, 0);
      const y = new Float32Array(n * O);
      const dx = new Float32Array(n * I);
      denseForward(layer, x, n, y);
      denseBackward(layer, x, dy, n, dx);
      const at = (a: Float32Array, i: number) => a[i] as number;
      for (let r = 0; r < n; r++) {
        for (let j = 0; j < O; j++) {
          let want = at(layer.bias, j);
          for (let k = 0; k < I; k++) want += at(x, r * I + k) * at(layer.weight, k * O + j);
          expect(at(y, r * O + j)).toBeCloseTo(want, 4);
        }
        for (let k = 0; k < I; k++) {
          let want = 0;
          for (let j = 0; j < O; j++) want += at(dy, r * O + j) * at(layer.weight, k * O + j);
          expect(at(dx, r * I + k)).toBeCloseTo(want, 4);
        }
      }
      for (let k = 0; k < I; k++) {
        for (let j = 0; j < O; j++) {
          let want = 0;
          for (let r = 0; r < n; r++) want += at(x, r * I + k) * at(dy, r * O + j);
          expect(at(layer.gradWeight, k * O + j)).toBeCloseTo(want, 4);
        }
      }
      for (let j = 0; j < O; j++) {
        let want = 0;
        for (let r = 0; r < n; r++) want += at(dy, r * O + j);
        expect(at(layer.gradBias, j)).toBeCloseTo(want, 4);
      }
    }
  });

  it("computes quantiles by linear interpolation", () => {
    const sorted = Float64Array.of(0, 1, 2, 3, 4);
    expect(quantile(sorted, 0)).toBe(0);
    expect(quantile(sorted, 0.5)).toBe(2);
    expect(quantile(sorted, 0.85)).toBeCloseTo(3.4, 12);
    expect(quantile(sorted, 1)).toBe(4);
  });

  /** Writes the sets as IDX files (images gzipped) into a new temporary folder. */
  function idxDir(sets: { train: ImageSet; test: ImageSet }): string {
    const dir = mkdtempSync(join(tmpdir(), "demo-idx-"));
    for (const [split, set] of [
      ["train", sets.train],
      ["t10k", sets.test],
    ] as const) {
      const images = encodeIdx([set.count, 28, 28], set.images);
      writeFileSync(join(dir, `${split}-images-idx3-ubyte.gz`), gzipSync(images));
      writeFileSync(join(dir, `${split}-labels-idx1-ubyte`), encodeIdx([set.count], set.labels));
    }
    return dir;
  }
  const wasm = {
    simd: join(import.meta.dirname, "../dist/batchnorm-simd.wasm"),
    scalar: join(import.meta.dirname, "../dist/batchnorm-scalar.wasm"),
  };

  it("gives the same results in two worker threads as in one thread", async () => {
    const sets = { train: generated(600, 3), test: generated(200, 4) };
    const dir = idxDir(sets);
    try {
      expect(hasDataset(dir)).toBe(true);
      const options = { steps: 40, evalEvery: 20 };
      const local = runExperiment({ ...sets, ...options });
      const steps: number[] = [];
      const parallel = await runExperimentParallel(
        dir,
        resolveSettings({ ...sets, ...options }),
        wasm,
        { onProgress: (p) => steps.push(p.step) },
      );
      expect(steps[steps.length - 1]).toBe(40);
      for (const key of ["plain", "bn"] as const) {
        expect(parallel[key].evals).toEqual(local[key].evals);
        expect(parallel[key].train).toEqual(local[key].train);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("splits each batch over two data-parallel replicas with the curves of one worker", async () => {
    const sets = { train: slice(data.train, 1200), test: slice(data.test, 300) };
    const dir = idxDir(sets);
    try {
      const settings = resolveSettings({ ...sets, steps: 60, evalEvery: 20 });
      const one = await runExperimentParallel(dir, settings, wasm, {}, 1);
      const two = await runExperimentParallel(dir, settings, wasm, {}, 2);
      for (const key of ["plain", "bn"] as const) {
        const [a, b] = [one[key], two[key]];
        expect(b.evals.map((e) => e.step)).toEqual([0, 20, 40, 60]);
        // Float32 noise only: sums over 30 rows merged in float64 instead of over 60 rows.
        a.evals.forEach((e, i) => {
          const f = b.evals[i] as (typeof b.evals)[number];
          expect(
            Math.abs(f.accuracy - e.accuracy),
            `${key} accuracy, step ${e.step}`,
          ).toBeLessThanOrEqual(2 / 300);
          expect(f.loss, `${key} loss, step ${e.step}`).toBeCloseTo(e.loss, 4);
        });
        expect(b.train.map((t) => t.step)).toEqual(a.train.map((t) => t.step));
        for (const [i, t] of a.train.entries()) expect(b.train[i]?.loss).toBeCloseTo(t.loss, 4);
      }
      // BN learns in this many steps, so the comparison is of a curve that moves.
      expect(two.bn.evals[3]?.accuracy).toBeGreaterThan(
        (two.bn.evals[0]?.accuracy as number) + 0.2,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("gives each replica contiguous rows of a batch", () => {
    expect([0, 1].map((r) => replicaRows(60, r, 2))).toEqual([
      { from: 0, count: 30 },
      { from: 30, count: 30 },
    ]);
    expect([0, 1, 2].map((r) => replicaRows(7, r, 3))).toEqual([
      { from: 0, count: 3 },
      { from: 3, count: 2 },
      { from: 5, count: 2 },
    ]);
  });
});
