/**
 * The small-batch experiment (examples/fashion-mnist/small-batch*.ts) on a small slice of the
 * dataset (or on generated images when it is not installed): its pieces (the renorm schedule,
 * the two-class sampler, layer-by-layer recalibration), that evaluating and recalibrating
 * leaves training untouched, the report, and the worker threads' results.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { denseForward } from "../examples/fashion-mnist/dense.js";
import {
  DEBIAN_DATA_DIR,
  encodeIdx,
  hasDataset,
  type ImageSet,
  loadFashionMnist,
} from "../examples/fashion-mnist/idx.js";
import { Network } from "../examples/fashion-mnist/mlp.js";
import { gaussianInit, Rng } from "../examples/fashion-mnist/random.js";
import {
  BatchSampler,
  NETWORKS,
  recalibrateNetwork,
  renormSchedule,
  resolveSmallBatchSettings,
  trainNetwork,
} from "../examples/fashion-mnist/small-batch.js";
import {
  smallBatchSummary,
  writeSmallBatchReport,
} from "../examples/fashion-mnist/small-batch-report.js";
import { runSmallBatch, runSmallBatchParallel } from "../examples/fashion-mnist/small-batch-run.js";
import { distPath, initFromDist } from "./setup-backends.js";

/** Images whose class is a bright vertical stripe at column 2·label, on noise. */
function stripes(count: number, seed: number): ImageSet {
  const rng = new Rng(seed);
  const labels = Uint8Array.from({ length: count }, () => Math.floor(rng.next() * 10));
  const images = new Uint8Array(count * 784);
  images.forEach((_, i) => {
    const column = i % 28;
    const label = labels[Math.floor(i / 784)] as number;
    images[i] = (column >> 1 === label ? 180 : 0) + Math.floor(rng.next() * 60);
  });
  return { count, pixels: 784, images, labels };
}

const sliceOf = (set: ImageSet, count: number): ImageSet => ({
  count,
  pixels: set.pixels,
  images: set.images.subarray(0, count * set.pixels),
  labels: set.labels.subarray(0, count),
});

const real = hasDataset(DEBIAN_DATA_DIR);
const full = real ? loadFashionMnist(DEBIAN_DATA_DIR) : undefined;
const data = full
  ? { train: sliceOf(full.train, 3000), test: sliceOf(full.test, 500) }
  : { train: stripes(3000, 1), test: stripes(500, 2) };
const settings = resolveSmallBatchSettings(data, {
  steps: 40,
  evalEvery: 20,
  recalibrateBatches: 4,
});

beforeAll(async () => {
  await initFromDist();
});

describe(`small-batch experiment (${real ? "a slice of the dataset" : "generated images"})`, () => {
  it("follows the Batch Renorm paper's schedule, scaled to the run", () => {
    expect(renormSchedule(0, 1600)).toEqual({ rMax: 1, dMax: 0 });
    expect(renormSchedule(100, 1600)).toEqual({ rMax: 1, dMax: 0 }); // plain BN for 1/16
    expect(renormSchedule(500, 1600)).toEqual({ rMax: 1 + (2 * 400) / 700, dMax: 5 });
    expect(renormSchedule(800, 1600)).toEqual({ rMax: 3, dMax: 5 });
    const mid = renormSchedule(300, 1600);
    expect(mid.rMax).toBeCloseTo(1 + (2 * 200) / 700, 12);
    expect(mid.dMax).toBeCloseTo(5 * (200 / 400), 12);
  });

  it("draws non-i.i.d. batches from exactly two classes, half each, and i.i.d. ones from all", () => {
    const x = new Float32Array(60 * 784);
    const labels = new Uint8Array(60);
    const twoClass = new BatchSampler(data.train, 5, "two-class");
    const iid = new BatchSampler(data.train, 5, "iid");
    const seen = new Set<number>();
    for (let b = 0; b < 20; b++) {
      twoClass.next(60, x, labels);
      const counts = new Map<number, number>();
      for (const l of labels) counts.set(l, (counts.get(l) ?? 0) + 1);
      expect([...counts.values()]).toEqual([30, 30]);
      iid.next(60, x, labels);
      for (const l of labels) seen.add(l);
    }
    expect(seen.size).toBe(10);
  });

  it("recalibrates layer by layer: layer 0's statistics are those of its dense outputs", () => {
    const net = new Network(gaussianInit(settings.sizes, 0.1, 3), {});
    const rng = new Rng(9);
    const batches = [0, 1, 2].map(() => Float32Array.from({ length: 60 * 784 }, () => rng.next()));
    const weight = net.norms[1]?.weight?.slice();
    recalibrateNetwork(net, batches, 60);
    const layer = net.layers[0] as (typeof net.layers)[number];
    const z = batches.map((x) => {
      const out = new Float32Array(60 * layer.outputs);
      denseForward(layer, x, 60, out);
      return out;
    });
    const unit = 7;
    const means = z.map(
      (v) => v.filter((_, i) => i % layer.outputs === unit).reduce((s, e) => s + e, 0) / 60,
    );
    const want = means.reduce((s, m) => s + m, 0) / 3;
    expect(net.norms[0]?.runningMean?.[unit]).toBeCloseTo(want, 5);
    expect(net.norms[2]?.numBatchesTracked).toBe(3);
    expect(net.norms[1]?.weight).toEqual(weight);
    expect(net.norms[0]?.training).toBe(true);
    net.dispose();
  });

  it("evaluating (and recalibrating) leaves training untouched", () => {
    const spec =
      NETWORKS.find((n) => n.id === "small-brn") ?? (NETWORKS[0] as (typeof NETWORKS)[0]);
    const often = trainNetwork(data, settings, spec);
    const once = trainNetwork(data, { ...settings, evalEvery: settings.steps }, spec);
    expect(often.evals.map((e) => e.step)).toEqual([0, 20, 40]);
    expect(often.evals[often.evals.length - 1]).toEqual(once.evals[once.evals.length - 1]);
  }, 300_000);

  it("trains all five networks, past chance, and writes the report", () => {
    const result = runSmallBatch(data, settings);
    expect(result.networks.map((r) => r.spec.id)).toEqual(NETWORKS.map((n) => n.id));
    for (const r of result.networks) {
      const last = r.evals[r.evals.length - 1] as { moving: number; recalibrated: number };
      // Chance is 10%; 40 steps on two-class batches get little past it (that is the effect).
      const floor = r.spec.sampling === "iid" ? 0.5 : 0.15;
      expect(last.moving, r.spec.id).toBeGreaterThan(floor);
      expect(last.recalibrated, r.spec.id).toBeGreaterThan(floor);
    }
    const dir = mkdtempSync(join(tmpdir(), "small-batch-"));
    try {
      const info = { dataDir: "-", threads: 1, backend: "simd", node: process.version, date: "-" };
      const paths = writeSmallBatchReport(dir, result, info);
      expect(paths.map((p) => p.slice(dir.length + 1)).sort()).toEqual([
        "results.json",
        "small-batch-4.svg",
        "small-batch-non-iid.svg",
        "summary.md",
      ]);
      const svg = readFileSync(join(dir, "small-batch-4.svg"), "utf8");
      expect(svg).toContain("Batch Renorm, mini-batches of 4, recalibrated");
      expect(svg).not.toContain("two classes");
      const summary = smallBatchSummary(result);
      for (const n of NETWORKS) expect(summary).toContain(`| ${n.label} |`);
      expect(JSON.parse(readFileSync(join(dir, "results.json"), "utf8")).networks).toHaveLength(5);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 300_000);

  it("gives the same results in worker threads as in one thread", async () => {
    const dir = mkdtempSync(join(tmpdir(), "small-batch-idx-"));
    try {
      // The workers read IDX files: write the data of this test as such.
      const files = { train: data.train, t10k: data.test };
      for (const [split, set] of Object.entries(files)) {
        const images = encodeIdx([set.count, 28, 28], set.images.slice());
        writeFileSync(join(dir, `${split}-images-idx3-ubyte`), images);
        writeFileSync(
          join(dir, `${split}-labels-idx1-ubyte`),
          encodeIdx([set.count], set.labels.slice()),
        );
      }
      const specs = NETWORKS.slice(1, 3);
      const short = { ...settings, steps: 20, evalEvery: 10 };
      const local = runSmallBatch(data, short, undefined, specs);
      const wasm = {
        simd: distPath("batchnorm-simd.wasm"),
        scalar: distPath("batchnorm-scalar.wasm"),
      };
      const ids: string[] = [];
      const parallel = await runSmallBatchParallel(
        { dataDir: dir, settings: short, wasm },
        2,
        (id) => ids.push(id),
        specs,
      );
      expect(new Set(ids)).toEqual(new Set(specs.map((s) => s.id)));
      expect(parallel.networks.map((r) => r.evals)).toEqual(local.networks.map((r) => r.evals));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 300_000);
});
