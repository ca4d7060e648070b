/**
 * `npm run demo`: the MNIST experiment of the batch normalization paper (Ioffe & Szegedy 2015,
 * §4.1, Figure 1) on Fashion-MNIST. A 784-100-100-100-10 sigmoid network is trained twice from the
 * same initial weights on the same mini-batches — without and with this library's BatchNorm
 * before each sigmoid — and the report (charts, JSON, summary) goes to reports/fashion-mnist/.
 *
 * Run `npm run demo -- --help` for the options.
 *
 * @module
 */
import { copyFileSync, existsSync, mkdirSync } from "node:fs";
import { availableParallelism } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { init } from "../../ts/index.node.js";
import { DEBIAN_DATA_DIR, hasDataset, loadFashionMnist } from "./idx.js";
import { runExperimentParallel } from "./parallel.js";
import { ProgressBar } from "./progress.js";
import { type RunInfo, summary, writeReport } from "./report.js";
import { SMALL_BATCH_DEFAULTS } from "./small-batch.js";
import { runSmallBatchCli } from "./small-batch-main.js";
import { DEFAULTS, type ExperimentResult, resolveSettings, runExperiment } from "./train.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));

const HELP = `Usage: npm run demo -- [options]

Trains the paper's sigmoid MLP on Fashion-MNIST without and with batch normalization and writes
Figure 1 (test accuracy; percentiles of one sigmoid's input) as SVG charts plus a JSON report.

Options:
  --experiment E   figure1 (default): the paper's Figure 1; small-batch: batch norm on
                   mini-batches of 4 and of two classes, Batch Renorm, recalibrate (see README)
  --steps N        training steps (mini-batches of 60) per network (default ${DEFAULTS.steps};
                   small-batch: ${SMALL_BATCH_DEFAULTS.steps})
  --data DIR       folder with the four IDX files, gzipped or not
                   (default ${DEBIAN_DATA_DIR}, from Debian's dataset-fashion-mnist)
  --out DIR        report folder (default reports/fashion-mnist)
  --lr X           SGD learning rate, both networks (default ${DEFAULTS.learningRate})
  --init-std X     std of the Gaussian initial weights (default ${DEFAULTS.initStd})
  --seed N         seeds the initial weights and the batch order (default ${DEFAULTS.seed})
  --eval-every N   evaluate on the test set every N steps (default ${DEFAULTS.evalEvery})
  --eval-size N    evaluate on the first N test images (default all 10,000)
  --threads 1|2    2 trains the networks in parallel worker threads (default: 2 if 2 cores)
  --replicas N     trains each network data-parallel in N worker threads, each on its part of
                   every mini-batch, with synchronized batch norm and all-reduced gradients
                   (the same curves as one thread, within float32 noise; default 1)
  --docs           also copy the charts to docs/fashion-mnist/ (for the README)
  -h, --help       this text
`;

function fail(message: string): never {
  process.stderr.write(`demo: ${message}\n`);
  process.exit(1);
}

function parseCli() {
  let values: ReturnType<typeof parse>["values"];
  function parse() {
    return parseArgs({
      options: {
        experiment: { type: "string", default: "figure1" },
        steps: { type: "string" },
        data: { type: "string" },
        out: { type: "string" },
        lr: { type: "string" },
        "init-std": { type: "string" },
        seed: { type: "string" },
        "eval-every": { type: "string" },
        "eval-size": { type: "string" },
        threads: { type: "string" },
        replicas: { type: "string" },
        docs: { type: "boolean", default: false },
        help: { type: "boolean", short: "h", default: false },
      },
      strict: true,
    });
  }
  try {
    values = parse().values;
  } catch (error) {
    fail(`${(error as Error).message}\n\n${HELP}`);
  }
  if (values.help) {
    process.stdout.write(HELP);
    process.exit(0);
  }
  const int = (name: keyof typeof values, min: number): number | undefined => {
    const raw = values[name];
    if (raw === undefined) return undefined;
    const v = Number(raw);
    if (!Number.isSafeInteger(v) || v < min)
      fail(`--${name} must be an integer ≥ ${min}, got ${String(raw)}`);
    return v;
  };
  const num = (name: keyof typeof values): number | undefined => {
    const raw = values[name];
    if (raw === undefined) return undefined;
    const v = Number(raw);
    if (!Number.isFinite(v) || v <= 0)
      fail(`--${name} must be a positive number, got ${String(raw)}`);
    return v;
  };
  const threads = int("threads", 1) ?? (availableParallelism() >= 2 ? 2 : 1);
  if (threads > 2) fail(`--threads must be 1 or 2, got ${threads}`);
  const experiment = values.experiment;
  if (experiment !== "figure1" && experiment !== "small-batch") {
    fail(`--experiment must be figure1 or small-batch, got ${String(experiment)}`);
  }
  return {
    experiment,
    steps: int("steps", 1),
    dataDir: resolve(values.data ?? DEBIAN_DATA_DIR),
    dataGiven: values.data !== undefined,
    outDir: resolve(
      values.out ??
        join(
          ROOT,
          experiment === "small-batch"
            ? "reports/fashion-mnist-small-batch"
            : "reports/fashion-mnist",
        ),
    ),
    learningRate: num("lr"),
    initStd: num("init-std"),
    seed: int("seed", 0),
    evalEvery: int("eval-every", 1),
    evalSize: int("eval-size", 1),
    threads,
    replicas: int("replicas", 1) ?? 1,
    docs: values.docs === true,
  };
}

function missingData(dir: string, given: boolean): never {
  const files =
    "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (each may end in .gz)";
  fail(
    `Fashion-MNIST is not in ${dir}.\n` +
      (given
        ? `  That folder must hold ${files}.\n`
        : "  Install Debian's package (as root: bash scripts/setup.sh --dataset, or\n" +
          "  sudo apt-get install dataset-fashion-mnist), or download the four IDX files from\n" +
          "  https://github.com/zalandoresearch/fashion-mnist (data/fashion) and pass --data DIR.\n" +
          `  Needed: ${files}.\n`),
  );
}

async function main() {
  const cli = parseCli();
  if (!hasDataset(cli.dataDir)) missingData(cli.dataDir, cli.dataGiven);
  const wasm = {
    simd: join(ROOT, "dist/batchnorm-simd.wasm"),
    scalar: join(ROOT, "dist/batchnorm-scalar.wasm"),
  };
  if (!existsSync(wasm.simd) || !existsSync(wasm.scalar)) {
    fail(
      `the wasm builds are missing (${wasm.simd}): run \`npm run build\` first (npm run demo does)`,
    );
  }
  const lib = await init(wasm);
  const info = {
    dataDir: cli.dataDir,
    threads: cli.threads,
    backend: lib.backend,
    node: process.version,
    date: new Date().toISOString(),
  };
  const { text, paths } =
    cli.experiment === "small-batch"
      ? await runSmallBatchCli(cli, wasm, info)
      : await figure1(cli, wasm, info);
  process.stdout.write(`\n${text}\n\nReport: ${cli.outDir}\n`);
  for (const p of paths) process.stdout.write(`  ${p}\n`);
  if (cli.docs) {
    const docs = join(ROOT, "docs/fashion-mnist");
    mkdirSync(docs, { recursive: true });
    for (const p of paths.filter((p) => p.endsWith(".svg"))) {
      copyFileSync(p, join(docs, p.slice(p.lastIndexOf("/") + 1)));
    }
    process.stdout.write(`Charts copied to ${docs}\n`);
  }
}

/** The paper's Figure 1 experiment: trains, writes the report, returns its summary and files. */
async function figure1(
  cli: ReturnType<typeof parseCli>,
  wasm: { simd: string; scalar: string },
  info: RunInfo,
): Promise<{ text: string; paths: string[] }> {
  const data = loadFashionMnist(cli.dataDir);
  const settings = resolveSettings({ ...data, ...definedOnly(cli) });
  process.stderr.write(
    `Fashion-MNIST from ${cli.dataDir}: ${data.train.count} training and ${data.test.count} test images\n` +
      `Network ${settings.sizes.join("-")} (sigmoid), ${settings.steps} steps of ${settings.batchSize}, ` +
      `SGD lr ${settings.learningRate}, init N(0, ${settings.initStd}²); BN on the ${info.backend} back end; ` +
      `test accuracy every ${settings.evalEvery} steps on ${settings.evalSize} images; ` +
      `${
        cli.replicas > 1
          ? `${cli.replicas} data-parallel worker threads per network (synchronized BN)`
          : cli.threads === 2
            ? "one worker thread per network"
            : "one thread"
      }\n`,
  );
  const bar = new ProgressBar(process.stderr);
  const callbacks = {
    onProgress: bar.update.bind(bar),
    onEval: bar.evaluated.bind(bar),
  };
  let result: ExperimentResult;
  try {
    result =
      cli.threads === 2 || cli.replicas > 1
        ? await runExperimentParallel(cli.dataDir, settings, wasm, callbacks, cli.replicas)
        : runExperiment({ ...data, ...definedOnly(cli), ...callbacks });
  } finally {
    bar.done();
  }
  const runInfo = {
    ...info,
    threads: cli.replicas > 1 ? 2 * cli.replicas : cli.threads,
    replicas: cli.replicas,
  };
  return { text: summary(result), paths: writeReport(cli.outDir, result, runInfo) };
}

/** The CLI's numeric settings that were given, for {@link resolveSettings}. */
function definedOnly(cli: ReturnType<typeof parseCli>) {
  const { steps, learningRate, initStd, seed, evalEvery, evalSize } = cli;
  const all = { steps, learningRate, initStd, seed, evalEvery, evalSize };
  return Object.fromEntries(Object.entries(all).filter(([, v]) => v !== undefined));
}

await main();
