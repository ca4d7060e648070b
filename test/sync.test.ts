/**
 * Synchronized batch norm in one thread: the merge's numerics, a group of one (bit for bit the
 * unsynchronized module), the checks of `options.sync` and of what a gather returns, inference
 * without gathering, and the SharedArrayBuffer transport's own checks and failure paths. Replicas
 * in real worker threads are test/sync-workers.test.ts.
 */
import { afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import {
  abortSyncGroup,
  allReduceSum,
  BatchNorm,
  type BatchNormSync,
  createSyncGroup,
  joinSyncGroup,
} from "../ts/index.node.js";
import { syncMoments } from "../ts/sync.js";
import { Rng } from "./random.js";
import { BACKENDS, initFromDist } from "./setup-backends.js";
import { expectSameBits, expectSameState } from "./state.js";

beforeAll(async () => {
  await initFromDist();
});

afterEach(() => {
  vi.restoreAllMocks();
});

/** A group of one: allGather hands back what it is given. */
const loopback = (): BatchNormSync => ({ rank: 0, size: 1, allGather: (local) => [local] });

/** rank 0 of `size`, whose allGather answers with `answer(local)`. */
const fake = (size: number, answer: (local: Float64Array) => unknown): BatchNormSync => ({
  rank: 0,
  size,
  allGather: (local) => answer(local) as Float64Array[],
});

/**
 * Runs `call` as every rank of a group whose allGather is simulated in one thread: a first
 * round records each rank's payload (and stops the call), a second hands every rank all of them.
 * Works for calls that gather once.
 */
function simulate<T>(size: number, call: (sync: BatchNormSync) => T): T[] {
  const payloads: Float64Array[] = [];
  const stop = new Error("recorded");
  for (let rank = 0; rank < size; rank++) {
    const record = (local: Float64Array): Float64Array[] => {
      payloads[rank] = local.slice();
      throw stop;
    };
    expect(() => call({ rank, size, allGather: record })).toThrow(stop);
  }
  return Array.from({ length: size }, (_, rank) => call({ rank, size, allGather: () => payloads }));
}

describe("the merge (Chan's update in float64)", () => {
  it("gives the two-pass statistics of the whole batch at x = 1e8 + N(0, 1), where Σx² fails", () => {
    const rng = new Rng(5);
    const sizes = [5, 1, 9];
    const C = 3;
    const parts = sizes.map((n) =>
      Array.from({ length: C }, () => Array.from({ length: n }, () => 1e8 + rng.normal())),
    );
    const stats = (v: number[]) => {
      const mean = v.reduce((a, b) => a + b, 0) / v.length;
      return { mean, variance: v.reduce((a, b) => a + (b - mean) ** 2, 0) / v.length };
    };
    const merged = simulate(3, (sync) => {
      const local = (parts[sync.rank] as number[][]).map(stats);
      return syncMoments(
        sync,
        local.map((s) => s.mean),
        local.map((s) => s.variance),
        sizes[sync.rank] as number,
        "test",
      );
    });
    for (let c = 0; c < C; c++) {
      const all = parts.flatMap((p) => p[c] as number[]);
      const want = stats(all);
      for (const m of merged) {
        expect(m.n).toBe(15);
        expect(Math.abs((m.mean[c] as number) - want.mean)).toBeLessThan(1e-7);
        expect(Math.abs((m.variance[c] as number) - want.variance) / want.variance).toBeLessThan(
          1e-6,
        );
        // Every rank computes the same bits.
        expect(m.variance[c]).toBe(merged[0]?.variance[c]);
      }
      // Negative control: merging sums of squares, E[x²] − E[x]², loses the variance here.
      const sq = all.reduce((a, b) => a + b * b, 0) / all.length;
      expect(Math.abs(sq - want.mean ** 2 - want.variance)).toBeGreaterThan(0.1);
    }
  });
});

describe.each(BACKENDS)("BatchNorm with options.sync (%s back end)", (backend) => {
  const C = 4;
  const shape = [3, C, 5];
  const rng = new Rng(11);
  const x = () => Float32Array.from(rng.normals(60), (v) => 3 + 2 * v);

  it("a group of one is the module without sync, bit for bit", () => {
    const a = new BatchNorm(C, { backend, sync: loopback() });
    const b = new BatchNorm(C, { backend });
    for (let step = 0; step < 3; step++) {
      if (step === 2) for (const m of [a, b]) m.eval();
      const input = x();
      const dy = rng.normals(60);
      expectSameBits(`y, step ${step}`, a.forward(input, shape), b.forward(input, shape));
      const ga = a.backward(dy);
      const gb = b.backward(dy);
      expectSameBits(`dx, step ${step}`, ga.dx, gb.dx);
      expectSameBits(`dWeight, step ${step}`, ga.dWeight, gb.dWeight);
      expectSameBits(`dBias, step ${step}`, ga.dBias, gb.dBias);
      expectSameState(a, b);
    }
  });

  it("composes with renorm (a group of one is still the module without sync) and refuses ghost batches", () => {
    const renorm = { rMax: 1.5, dMax: 0.5 };
    const a = new BatchNorm(C, { backend, sync: loopback(), renorm });
    const b = new BatchNorm(C, { backend, renorm });
    for (let step = 0; step < 3; step++) {
      const input = Float32Array.from(x(), (v) => v * (1 + step)); // r and d leave 1 and 0
      const dy = rng.normals(60);
      expectSameBits(`y, step ${step}`, a.forward(input, shape), b.forward(input, shape));
      expectSameBits(`dx, step ${step}`, a.backward(dy).dx, b.backward(dy).dx);
      expectSameState(a, b);
    }
    expect(() => new BatchNorm(C, { backend, sync: loopback(), virtualBatchSize: 1 })).toThrow(
      /options\.virtualBatchSize and options\.sync cannot be combined/,
    );
  });

  it("checks the gather's answer and leaves the module as it was", () => {
    const ok = new BatchNorm(C, { backend });
    ok.forward(x(), shape);
    const cases: [string, (l: Float64Array) => unknown, RegExp][] = [
      ["no array", () => "nope", /one array per replica \(2\), got string/],
      ["too few", (l) => [l], /one array per replica \(2\), got 1/],
      [
        "wrong length",
        (l) => [l, new Float64Array(3)],
        /returned 3 values for rank 1, expected 11 \(a forward \(statistics\) gather of 4 channels\)/,
      ],
      [
        "out of step",
        (l) => [l, Float64Array.from(l, (v, i) => (i === 0 ? 2 : v))],
        /replicas out of step: rank 0 is in a forward \(statistics\) of 4 channels, rank 1 in a backward/,
      ],
      [
        "bad count",
        (l) => [l, Float64Array.from(l, (v, i) => (i === 2 ? 0 : v))],
        /rank 1 sent a count of 0 values per channel/,
      ],
    ];
    for (const [what, answer, message] of cases) {
      const bn = new BatchNorm(C, { backend, sync: fake(2, answer) });
      expect(() => bn.forward(x(), shape), what).toThrow(message);
      expect(bn.numBatchesTracked, what).toBe(0);
      expectSameState(bn, new BatchNorm(C, { backend }));
      expect(() => bn.backward(new Float32Array(60)), what).toThrow(
        /no forward\(\) to differentiate/,
      );
    }
    // A backward's gather is checked too.
    let calls = 0;
    const bn = new BatchNorm(C, { backend, sync: fake(2, (l) => (++calls === 1 ? [l, l] : [l])) });
    bn.forward(x(), shape);
    expect(() => bn.backward(new Float32Array(60))).toThrow(/got 1/);
  });

  it("counts values per channel over the group: one row per replica is enough for two", () => {
    const one = Float32Array.of(1, 2, 3, 4);
    expect(() => new BatchNorm(C, { backend, sync: loopback() }).forward(one, [1, C])).toThrow(
      /more than 1 value per channel when training, got 1 over 1 replica$/,
    );
    const ys = simulate(2, (sync) =>
      new BatchNorm(C, { backend, sync }).forward(
        one.map((v) => v + sync.rank),
        [1, C],
      ),
    );
    // Two values per channel, v and v + 1: mean v + 0.5, variance 0.25, so y = ∓0.5/√(0.25 + eps).
    expect(ys[0]?.[0]).toBeCloseTo(-1, 4);
    expect(ys[1]?.[0]).toBeCloseTo(1, 4);
  });

  it("does not gather in inference, even with batch statistics (trackRunningStats: false)", () => {
    const never = fake(2, () => {
      throw new Error("gathered in inference");
    });
    for (const trackRunningStats of [true, false]) {
      const bn = new BatchNorm(C, { backend, trackRunningStats, sync: never }).eval();
      const y = bn.forward(x(), shape);
      expect(bn.backward(y).dx).toHaveLength(60);
    }
  });
});

describe("options.sync is checked", () => {
  const gather = (l: Float64Array) => [l];
  it.each([
    [5, TypeError, /options.sync must be an object \{ rank, size, allGather \}, got 5/],
    [
      { rank: 0, size: 0, allGather: gather },
      RangeError,
      /options.sync.size must be an integer ≥ 1, got 0/,
    ],
    [
      { rank: 2, size: 2, allGather: gather },
      RangeError,
      /options.sync.rank must be an integer in \[0, 2\), got 2/,
    ],
    [
      { rank: 0.5, size: 2, allGather: gather },
      RangeError,
      /rank must be an integer in \[0, 2\), got 0.5/,
    ],
    [{ rank: 0, size: 2 }, TypeError, /options.sync.allGather must be a function, got undefined/],
  ])("%o", (sync, type, message) => {
    const make = () => new BatchNorm(4, { backend: "js", sync: sync as BatchNormSync });
    expect(make).toThrow(type);
    expect(make).toThrow(message);
  });
});

describe("allReduceSum", () => {
  it("sums every rank's array in rank order, and refuses arrays of different lengths", () => {
    const sums = simulate(2, (sync) => allReduceSum(sync, Float64Array.of(1 + sync.rank, 10)));
    for (const s of sums) expect([...s]).toEqual([3, 20]);
    expect(() =>
      allReduceSum(
        fake(2, (l) => [l, new Float64Array(1)]),
        new Float64Array(2),
      ),
    ).toThrow(/rank 1 sent 1 values, rank 0 2/);
  });
});

describe("the SharedArrayBuffer group, in one thread", () => {
  it("checks createSyncGroup's arguments", () => {
    expect(() => createSyncGroup(0)).toThrow(/size must be an integer ≥ 1, got 0/);
    expect(() => createSyncGroup(2, { maxFloats: 1.5 })).toThrow(
      /maxFloats must be an integer ≥ 1/,
    );
    for (const timeoutMs of [0, Infinity, "1"]) {
      expect(() => createSyncGroup(2, { timeoutMs: timeoutMs as number })).toThrow(
        /timeoutMs must be a finite number > 0/,
      );
    }
  });

  it("a group of one gathers copies; a rank joins once; a structured clone of the handle joins too", () => {
    const handle = createSyncGroup(1, { maxFloats: 4 });
    const member = joinSyncGroup(structuredClone(handle), 0);
    const local = Float64Array.of(1, 2, 3);
    for (let k = 0; k < 3; k++) {
      const [got] = member.allGather(local);
      expect([...(got ?? [])]).toEqual([1, 2, 3]);
      expect(got).not.toBe(local);
    }
    expect(() => joinSyncGroup(handle, 0)).toThrow(/rank 0 already joined this group/);
    expect(() => joinSyncGroup(handle, 1)).toThrow(/rank must be an integer in \[0, 1\), got 1/);
    expect(() => joinSyncGroup({ ...handle, size: 2 }, 1)).toThrow(/handle.buffer has \d+ bytes/);
    expect(() => joinSyncGroup({} as typeof handle, 0)).toThrow(
      /handle must be what createSyncGroup returned/,
    );
  });

  it("a bad gather fails the group for every later call, with its message", () => {
    const member = joinSyncGroup(createSyncGroup(1, { maxFloats: 4 }), 0);
    expect(() => member.allGather(new Float64Array(5))).toThrow(RangeError);
    expect(() => member.allGather(new Float64Array(1))).toThrow(
      /sync group: rank 0: allGather of 5 values, the group holds 4 per rank \(createSyncGroup's maxFloats\) \(seen by rank 0\)/,
    );
    const other = joinSyncGroup(createSyncGroup(1), 0);
    expect(() => other.allGather(new Float32Array(1) as unknown as Float64Array)).toThrow(
      TypeError,
    );
  });

  it("a rank that never joins: the others fail after timeoutMs, naming it; an abort ends a group", () => {
    const handle = createSyncGroup(2, { timeoutMs: 50 });
    const member = joinSyncGroup(handle, 0);
    expect(() => member.allGather(new Float64Array(1))).toThrow(
      /rank 0 waited 50 ms in allGather #1 for rank\(s\) 1 \(never joined\)/,
    );
    const h2 = createSyncGroup(1);
    const m2 = joinSyncGroup(h2, 0);
    abortSyncGroup(h2, new Error("worker 3 died"));
    abortSyncGroup(h2, "a second reason is ignored");
    expect(() => m2.allGather(new Float64Array(1))).toThrow(
      /aborted by the main thread: Error: worker 3 died \(seen by rank 0\)$/,
    );
  });

  it("refuses to join where Atomics.wait may not block (a browser's main thread)", () => {
    vi.spyOn(Atomics, "wait").mockImplementation(() => {
      throw new TypeError("Atomics.wait cannot be called in this context");
    });
    expect(() => joinSyncGroup(createSyncGroup(1), 0)).toThrow(
      /cannot block in Atomics.wait .*join the group from a Web Worker/,
    );
  });
});
