/**
 * `npm run demo -- --experiment small-batch`: runs the small-batch experiment
 * (`small-batch.ts`) with the demo's command-line settings and writes its report.
 *
 * @module
 */
import { loadFashionMnist } from "./idx.js";
import type { RunInfo } from "./report.js";
import { NETWORKS, resolveSmallBatchSettings, type SmallBatchEval } from "./small-batch.js";
import { smallBatchSummary, writeSmallBatchReport } from "./small-batch-report.js";
import { runSmallBatch, runSmallBatchParallel } from "./small-batch-run.js";

/** The demo's command-line settings that this experiment reads. */
export interface SmallBatchCli {
  dataDir: string;
  outDir: string;
  threads: number;
  steps?: number | undefined;
  learningRate?: number | undefined;
  initStd?: number | undefined;
  seed?: number | undefined;
  evalEvery?: number | undefined;
  evalSize?: number | undefined;
}

export async function runSmallBatchCli(
  cli: SmallBatchCli,
  wasm: { simd: string; scalar: string },
  info: RunInfo,
): Promise<{ text: string; paths: string[] }> {
  const data = loadFashionMnist(cli.dataDir);
  const { steps, learningRate, initStd, seed, evalEvery, evalSize } = cli;
  const settings = resolveSmallBatchSettings(data, {
    steps,
    learningRate,
    initStd,
    seed,
    evalEvery,
    evalSize,
  });
  process.stderr.write(
    `Small-batch experiment: ${NETWORKS.length} networks ${settings.sizes.join("-")} (sigmoid), ` +
      `${settings.steps} SGD steps of ${settings.batchSize}, lr ${settings.learningRate}; BN on the ${info.backend} back end; ` +
      `test accuracy every ${settings.evalEvery} steps on ${settings.evalSize} images, with the moving averages ` +
      `and recalibrated; ${cli.threads} thread${cli.threads === 2 ? "s" : ""}\n`,
  );
  const start = performance.now();
  const onEval = (id: string, e: SmallBatchEval) => {
    const t = ((performance.now() - start) / 1000).toFixed(0);
    process.stderr.write(
      `  [${t} s] ${id.padEnd(10)} step ${String(e.step).padStart(5)}: ` +
        `${(100 * e.moving).toFixed(1)}% moving averages, ${(100 * e.recalibrated).toFixed(1)}% recalibrated\n`,
    );
  };
  const result =
    cli.threads >= 2
      ? await runSmallBatchParallel({ dataDir: cli.dataDir, settings, wasm }, cli.threads, onEval)
      : runSmallBatch(data, settings, onEval);
  return {
    text: smallBatchSummary(result),
    paths: writeSmallBatchReport(cli.outDir, result, info),
  };
}
