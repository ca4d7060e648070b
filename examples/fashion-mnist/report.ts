/**
 * The report of a run: Figure 1's three charts (plus the training loss) as SVG, every number as
 * JSON, and a plain-text summary.
 *
 * @module
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type Band, extent, lineChart, type Series } from "./svg.js";
import type { EvalPoint, ExperimentResult, NetworkResult } from "./train.js";

const COLOR = { plain: "#0072b2", bn: "#d55e00" } as const;
const DASH_PLAIN = "7 5";

/** The chart files, by name, as SVG text. */
export function charts(result: ExperimentResult): Record<string, string> {
  const { plain, bn, settings } = result;
  const xRange = [0, settings.steps] as const;
  const accuracy = (r: NetworkResult): [number, number][] =>
    r.evals.map((e) => [e.step, e.accuracy]);
  const evalNote =
    settings.evalSize === 10000 ? "10,000 test images" : `${settings.evalSize} test images`;
  const files: Record<string, string> = {};

  // Like the paper's Figure 1a, the y axis starts high (0.5) once both networks pass 0.7, so
  // that the gap stays visible late in training; the first steps enter from below.
  const accuracies = [...plain.evals, ...bn.evals].map((e) => e.accuracy);
  const top = Math.max(...accuracies);
  files["accuracy.svg"] = lineChart({
    title: "(a) Test accuracy (Figure 1a)",
    xLabel: "training steps (mini-batches of 60)",
    yLabel: `test accuracy (${evalNote})`,
    xRange,
    ...(top > 0.7 ? { yRange: [0.5, Math.min(1, top + 0.03)] as const } : {}),
    series: [
      { label: "Without BN", color: COLOR.plain, dash: DASH_PLAIN, points: accuracy(plain) },
      { label: "With BN", color: COLOR.bn, points: accuracy(bn) },
    ],
  });

  // Figures 1b and 1c share their y axis so that the two distributions compare at a glance.
  const all = [...plain.evals, ...bn.evals].flatMap((e) => [e.p15, e.p85]);
  const yRange = extent(all);
  const unit = `unit ${settings.probeUnit} of hidden layer ${settings.sizes.length - 2}`;
  const percentiles = (r: NetworkResult, color: string, name: string, figure: string) => {
    const pts = (key: "p15" | "p50" | "p85") =>
      r.evals.map((e: EvalPoint): [number, number] => [e.step, e[key]]);
    const series: Series[] = [
      { label: "85th percentile", color, width: 1.5, dash: "2 3", points: pts("p85") },
      { label: "median", color, width: 2.5, points: pts("p50") },
      { label: "15th percentile", color, width: 1.5, dash: "2 3", points: pts("p15") },
    ];
    const bands: Band[] = [{ color, lower: pts("p15"), upper: pts("p85") }];
    return lineChart({
      title: `(${figure}) Input to one sigmoid, ${name} (Figure 1${figure})`,
      xLabel: "training steps",
      yLabel: `sigmoid input, ${unit}`,
      xRange,
      yRange,
      series,
      bands,
      legend: "top-right",
    });
  };
  files["sigmoid-input-without-bn.svg"] = percentiles(plain, COLOR.plain, "without BN", "b");
  files["sigmoid-input-with-bn.svg"] = percentiles(bn, COLOR.bn, "with BN", "c");

  const loss = (r: NetworkResult): [number, number][] => r.train.map((t) => [t.step, t.loss]);
  files["train-loss.svg"] = lineChart({
    title: "Training loss (mean over each 100 steps)",
    xLabel: "training steps",
    yLabel: "cross-entropy",
    xRange,
    series: [
      { label: "Without BN", color: COLOR.plain, dash: DASH_PLAIN, points: loss(plain) },
      { label: "With BN", color: COLOR.bn, points: loss(bn) },
    ],
    legend: "top-right",
  });
  return files;
}

/** Extra facts recorded in the JSON next to the results. */
export interface RunInfo {
  dataDir: string;
  threads: number;
  /** Data-parallel replicas per network (synchronized BN); 1 or absent: none. */
  replicas?: number;
  backend: string;
  node: string;
  date: string;
}

/** Writes files into `dir` (created if needed), listing their paths in `paths`. */
export function reportWriter(dir: string): {
  paths: string[];
  write(name: string, text: string): void;
} {
  mkdirSync(dir, { recursive: true });
  const paths: string[] = [];
  const write = (name: string, text: string) => {
    const path = join(dir, name);
    writeFileSync(path, text);
    paths.push(path);
  };
  return { paths, write };
}

/** Writes `results.json` and the charts into `dir` (created if needed); returns the paths. */
export function writeReport(dir: string, result: ExperimentResult, info: RunInfo): string[] {
  const { paths, write } = reportWriter(dir);
  write(
    "results.json",
    `${JSON.stringify({ ...info, ...result, summary: summaryNumbers(result) }, null, 2)}\n`,
  );
  for (const [name, svg] of Object.entries(charts(result))) write(name, svg);
  write("summary.txt", `${summary(result)}\n`);
  return paths;
}

function last<T>(a: readonly T[]): T | undefined {
  return a[a.length - 1];
}

/** First step at which a network's test accuracy reached `target` (or null). */
export function stepsTo(r: NetworkResult, target: number): number | null {
  return r.evals.find((e) => e.accuracy >= target)?.step ?? null;
}

/** Mean test accuracy over the last `k` evaluations: steadier than the last one alone. */
function lastMean(r: NetworkResult, k: number): number {
  const tail = r.evals.slice(-k);
  return tail.reduce((s, e) => s + e.accuracy, 0) / tail.length;
}

/** Test accuracy of both networks at round step counts along the run, and at the end. */
function checkpoints(result: ExperimentResult): { step: number; plain: number; bn: number }[] {
  const steps = result.settings.steps;
  const wanted = [500, 1000, 2500, 5000, 10000, 20000, 50000].filter((s) => s < steps);
  wanted.push(steps);
  return wanted.flatMap((step) => {
    const a = result.plain.evals.find((e) => e.step === step);
    const b = result.bn.evals.find((e) => e.step === step);
    return a && b ? [{ step, plain: a.accuracy, bn: b.accuracy }] : [];
  });
}

function summaryNumbers(result: ExperimentResult) {
  const finalPlain = last(result.plain.evals)?.accuracy ?? Number.NaN;
  const finalBn = last(result.bn.evals)?.accuracy ?? Number.NaN;
  return {
    finalAccuracy: { plain: finalPlain, bn: finalBn },
    lastFiveMeanAccuracy: { plain: lastMean(result.plain, 5), bn: lastMean(result.bn, 5) },
    checkpoints: checkpoints(result),
    bestAccuracy: {
      plain: Math.max(...result.plain.evals.map((e) => e.accuracy)),
      bn: Math.max(...result.bn.evals.map((e) => e.accuracy)),
    },
    // How long the BN network took to reach the plain network's final accuracy (its last 5).
    bnStepsToPlainFinal: stepsTo(result.bn, lastMean(result.plain, 5)),
    trainSeconds: { plain: result.plain.trainSeconds, bn: result.bn.trainSeconds },
    wallSeconds: result.wallSeconds,
  };
}

const pct = (v: number) => `${(100 * v).toFixed(2)}%`;

/** A few lines comparing the two networks. */
export function summary(result: ExperimentResult): string {
  const s = summaryNumbers(result);
  const { settings } = result;
  const rows = [
    ["", "without BN", "with BN"],
    ...s.checkpoints.map((c) => [`test accuracy at step ${c.step}`, pct(c.plain), pct(c.bn)]),
    [
      "mean of the last 5 evaluations",
      pct(s.lastFiveMeanAccuracy.plain),
      pct(s.lastFiveMeanAccuracy.bn),
    ],
    ["best test accuracy", pct(s.bestAccuracy.plain), pct(s.bestAccuracy.bn)],
    [
      "final sigmoid input p15/p50/p85",
      ...[result.plain, result.bn].map((r) => {
        const e = last(r.evals);
        return e === undefined
          ? "-"
          : `${e.p15.toFixed(2)} / ${e.p50.toFixed(2)} / ${e.p85.toFixed(2)}`;
      }),
    ],
    [
      "training time (its own steps)",
      `${s.trainSeconds.plain.toFixed(1)} s`,
      `${s.trainSeconds.bn.toFixed(1)} s`,
    ],
  ];
  const widths = [0, 1, 2].map((c) => Math.max(...rows.map((r) => (r[c] ?? "").length)));
  const lines = rows.map((r) =>
    r
      .map((cell, c) => (c === 0 ? cell.padEnd(widths[0] ?? 0) : cell.padStart(widths[c] ?? 0)))
      .join("   "),
  );
  lines.unshift(
    `Fashion-MNIST, ${settings.sizes.join("-")} sigmoid MLP, ${settings.steps} steps of ${settings.batchSize}, ` +
      `SGD lr ${settings.learningRate}, init N(0, ${settings.initStd}²), seed ${settings.seed}`,
  );
  const reach = s.bnStepsToPlainFinal;
  lines.push(
    reach === null
      ? "The BN network did not reach the plain network's final accuracy (mean of the last 5)."
      : `The BN network reached the plain network's final test accuracy (mean of the last 5 ` +
          `evaluations) after ${reach} steps ` +
          `(${((100 * reach) / settings.steps).toFixed(0)}% of the run).`,
    `Wall-clock time: ${result.wallSeconds.toFixed(1)} s (training and evaluations).`,
  );
  return lines.join("\n");
}
