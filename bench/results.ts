/**
 * From samples to results: medians, spreads, bandwidth, ratios to the same-run copy, to the
 * plain JS loop and to the JS back end; TF.js's derived backward; the targets as
 * verdicts.
 *
 * @module
 */
import { contestantName } from "./contestant.js";
import { type OpSpec, type ShapeSpec, shapeLabel } from "./plan.js";
import { median, quantile } from "./stats.js";
import type { Timed } from "./timing.js";
import type { BenchResults, CaseResult, ContestantResult, Impl, OpId, Path } from "./types.js";

export type Verdict = NonNullable<BenchResults["targets"]>[number];

export function summarize(spec: ShapeSpec, op: OpSpec, n: number, timed: Timed[]): CaseResult {
  const bytes = op.passes * 4 * n;
  const copyT = timed.find((t) => t.c.impl === "copy") as Timed;
  const copyMs = median(copyT.samples);
  const copyGbps = (8 * n) / copyMs / 1e6;
  const msOf = (impl: Impl, path: Path) =>
    median((timed.find((t) => t.c.impl === impl && t.c.path === path) as Timed).samples);
  const jsMs = msOf("js", "zero-copy");
  const plainMs = msOf("plain", "");
  const entry = (impl: Impl, path: Path, med: number, p10: number, p90: number) => {
    const gbps = bytes / med / 1e6;
    return {
      impl,
      path,
      name: contestantName({ impl, path }),
      medianMs: med,
      p10Ms: p10,
      p90Ms: p90,
      gbps,
      fractionOfCopy: gbps / copyGbps,
      speedupVsJs: jsMs / med,
      speedupVsPlain: plainMs / med,
    };
  };
  const list: ContestantResult[] = timed.map((t) => ({
    ...entry(
      t.c.impl,
      t.c.path,
      median(t.samples),
      quantile(t.samples, 0.1),
      quantile(t.samples, 0.9),
    ),
    samples: t.samples.length,
    runsPerSample: t.k,
    maxRelError: t.maxErr,
    derived: false,
  }));
  return {
    layout: spec.kind,
    shape: spec.shape,
    shapeLabel: shapeLabel(spec),
    ...(spec.perCall && { perCall: true }),
    op: op.id,
    opLabel: op.label,
    n,
    bytes,
    passes: op.passes,
    copy: { medianMs: copyMs, gbps: copyGbps },
    results: list,
  };
}

/** TF.js has no separate backward: it is reported as fwd+bwd − training fwd, per back end. */
export function deriveTfjsBackward(cases: CaseResult[]) {
  for (const c of cases) {
    if (c.op !== "bwd") continue;
    const get = (op: OpId) => cases.find((d) => d.shapeLabel === c.shapeLabel && d.op === op);
    const both = get("fwdbwd");
    const fwd = get("train");
    const js = c.results.find((r) => r.impl === "js" && r.path === "zero-copy");
    const plain = c.results.find((r) => r.impl === "plain");
    if (both === undefined || fwd === undefined || js === undefined || plain === undefined)
      continue;
    for (const impl of ["tfjs-wasm", "tfjs-cpu"] as const) {
      const a = both.results.find((r) => r.impl === impl);
      const b = fwd.results.find((r) => r.impl === impl);
      if (a === undefined || b === undefined) continue;
      const ms = a.medianMs - b.medianMs;
      const gbps = c.bytes / ms / 1e6;
      c.results.push({
        impl,
        path: "",
        name: impl,
        medianMs: ms,
        p10Ms: Number.NaN,
        p90Ms: Number.NaN,
        gbps,
        fractionOfCopy: gbps / c.copy.gbps,
        speedupVsJs: js.medianMs / ms,
        speedupVsPlain: plain.medianMs / ms,
        samples: 0,
        runsPerSample: 0,
        maxRelError: null,
        derived: true,
      });
    }
  }
}

/**
 * The targets for SIMD on the zero-copy path, as ratios measured in this run: against
 * the plain JS loop on the small and the 25 MB shapes, against the copy on the latter, and
 * against TF.js-wasm wherever it runs.
 */
export function targets(cases: readonly CaseResult[]): Verdict[] {
  const verdicts: Verdict[] = [];
  for (const c of cases) {
    const simd = c.results.find((r) => r.impl === "simd" && r.path === "zero-copy");
    const tfw = c.results.find((r) => r.impl === "tfjs-wasm" && !r.derived);
    if (simd === undefined) continue;
    const where = `${c.shapeLabel} ${c.opLabel}`;
    const size = c.shape.join("x");
    const small = ["8x32x16x16", "8x16x16x32", "256x1024"].includes(size);
    const big = ["32x64x56x56", "32x56x56x64"].includes(size);
    const times = (need: number) => ({
      target: `≥ ${need}× plain loop`,
      value: simd.speedupVsPlain,
      ok: simd.speedupVsPlain >= need,
      where,
    });
    if (small) verdicts.push(times(8));
    if (big) {
      verdicts.push(times(5));
      verdicts.push({
        target: "≥ 80% copy",
        value: simd.fractionOfCopy,
        ok: simd.fractionOfCopy >= 0.8,
        where,
      });
    }
    if (tfw !== undefined && (c.op === "fwdbwd" || c.op === "infer")) {
      const ratio = tfw.medianMs / simd.medianMs;
      const need = c.op === "fwdbwd" ? 50 : 10;
      verdicts.push({ target: `≥ ${need}× tfjs-wasm`, value: ratio, ok: ratio >= need, where });
    }
  }
  return verdicts;
}
