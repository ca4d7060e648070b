/**
 * The small-batch experiment's report: one chart per scenario (test accuracy over the run, with
 * the moving averages and with population statistics), every number as JSON, and a summary
 * table (Markdown, as the README shows it).
 *
 * @module
 */
import { type RunInfo, reportWriter } from "./report.js";
import type { SmallBatchNetworkResult } from "./small-batch.js";
import type { SmallBatchResult } from "./small-batch-run.js";
import { lineChart, type Series } from "./svg.js";

const COLOR: Record<string, string> = {
  reference: "#555555",
  "small-bn": "#0072b2",
  "small-brn": "#d55e00",
  "noniid-bn": "#0072b2",
  "noniid-brn": "#d55e00",
};
const DASH_RECALIBRATED = "6 4";

/** The two scenarios, each drawn with the reference network. */
const SCENARIOS = [
  {
    file: "small-batch-4.svg",
    title: "(a) Batch norm over mini-batches of 4",
    ids: ["small-bn", "small-brn"],
  },
  {
    file: "small-batch-non-iid.svg",
    title: "(b) Non-i.i.d. mini-batches (two classes each)",
    ids: ["noniid-bn", "noniid-brn"],
  },
] as const;

export function smallBatchCharts(result: SmallBatchResult): Record<string, string> {
  const byId = new Map(result.networks.map((r) => [r.spec.id, r]));
  const files: Record<string, string> = {};
  for (const scenario of SCENARIOS) {
    const nets = ["reference", ...scenario.ids].flatMap((id) => byId.get(id) ?? []);
    const series: Series[] = nets.flatMap((r) => [
      {
        label: `${r.spec.label}, moving averages`,
        color: COLOR[r.spec.id] ?? "#000000",
        points: r.evals.map((e) => [e.step, e.moving] as const),
      },
      {
        label: `${r.spec.label}, recalibrated`,
        color: COLOR[r.spec.id] ?? "#000000",
        dash: DASH_RECALIBRATED,
        points: r.evals.map((e) => [e.step, e.recalibrated] as const),
      },
    ]);
    const all = nets.flatMap((r) =>
      r.evals.filter((e) => e.step > 0).flatMap((e) => [e.moving, e.recalibrated]),
    );
    const low = Math.max(0, Math.floor(Math.min(...all) * 20) / 20);
    files[scenario.file] = lineChart({
      title: scenario.title,
      xLabel: "training steps (SGD on batches of 60)",
      yLabel: `test accuracy, inference mode (${result.settings.evalSize} images)`,
      xRange: [0, result.settings.steps],
      yRange: [low, Math.min(1, Math.max(...all) + 0.02)],
      series,
      width: 720,
      height: 440,
    });
  }
  return files;
}

/**
 * The evaluations of the run's second half: one network's accuracy swings by several points
 * between evaluations on two-class batches, so one evaluation, or the last few, says little.
 */
function secondHalf(r: SmallBatchNetworkResult, steps: number) {
  const tail = r.evals.filter((e) => e.step >= steps / 2);
  const mean = (key: "moving" | "recalibrated") =>
    tail.reduce((s, e) => s + e[key], 0) / tail.length;
  const lowest = (key: "moving" | "recalibrated") => Math.min(...tail.map((e) => e[key]));
  return {
    from: tail[0]?.step ?? steps,
    mean: { moving: mean("moving"), recalibrated: mean("recalibrated") },
    lowest: { moving: lowest("moving"), recalibrated: lowest("recalibrated") },
  };
}

export function smallBatchNumbers(result: SmallBatchResult) {
  return result.networks.map((r) => ({
    id: r.spec.id,
    label: r.spec.label,
    final: r.evals[r.evals.length - 1],
    secondHalf: secondHalf(r, result.settings.steps),
    trainSeconds: r.trainSeconds,
  }));
}

const pct = (v: number) => `${(100 * v).toFixed(1)}%`;
const pair = (v: { moving: number; recalibrated: number }) =>
  `${pct(v.moving)} / ${pct(v.recalibrated)}`;

/** The summary: the settings in a line, then a Markdown table. */
export function smallBatchSummary(result: SmallBatchResult): string {
  const s = result.settings;
  const numbers = smallBatchNumbers(result);
  const from = numbers[0]?.secondHalf.from ?? s.steps;
  const lines = [
    `Fashion-MNIST, ${s.sizes.join("-")} sigmoid MLP, ${s.steps} SGD steps of ${s.batchSize}, lr ${s.learningRate}, ` +
      `init N(0, ${s.initStd}²), seed ${s.seed}; test accuracy in inference mode on ${s.evalSize} images every ${s.evalEvery} steps, ` +
      `with the moving averages / after recalibrate over ${s.recalibrateBatches} i.i.d. training batches of ${s.batchSize}`,
    "",
    `| network | mean, steps ${from}–${s.steps} | lowest, steps ${from}–${s.steps} | final (step ${s.steps}) |`,
    "|---|---|---|---|",
    ...numbers.map(
      (n) =>
        `| ${n.label} | ${pair(n.secondHalf.mean)} | ${pair(n.secondHalf.lowest)} | ` +
        `${n.final ? pair(n.final) : "-"} |`,
    ),
    "",
    `Wall-clock time: ${result.wallSeconds.toFixed(0)} s (training ${result.networks
      .map((r) => `${r.spec.id} ${r.trainSeconds.toFixed(0)} s`)
      .join(", ")}; the rest is evaluation and recalibration).`,
  ];
  return lines.join("\n");
}

/** Writes `results.json`, `summary.md` and the charts into `dir`; returns the paths. */
export function writeSmallBatchReport(
  dir: string,
  result: SmallBatchResult,
  info: RunInfo,
): string[] {
  const { paths, write } = reportWriter(dir);
  const summary = smallBatchNumbers(result);
  write("results.json", `${JSON.stringify({ ...info, ...result, summary }, null, 2)}\n`);
  for (const [name, svg] of Object.entries(smallBatchCharts(result))) write(name, svg);
  write("summary.md", `${smallBatchSummary(result)}\n`);
  return paths;
}
