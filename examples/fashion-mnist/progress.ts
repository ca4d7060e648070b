/**
 * The progress bar: one line on stderr, redrawn in place on a terminal (at most ~10 times a
 * second); elsewhere (a pipe, a CI log) one plain line per evaluation instead.
 *
 * @module
 */
import type { EvalPoint, Progress } from "./train.js";

const pct = (v: number) => (Number.isFinite(v) ? `${(100 * v).toFixed(1)}%` : "  -  ");
const num = (v: number) => (Number.isFinite(v) ? v.toFixed(3) : "  -  ");

/** `m:ss`. */
export function clock(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return "-:--";
  const s = Math.round(seconds);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

/**
 * The text of the bar for one progress report, fitted to `columns`: the most detailed variant
 * that fits next to a bar of at least 5 characters.
 */
export function progressLine(p: Progress, columns: number): string {
  const eta = p.step > 0 ? (p.elapsedSeconds / p.step) * (p.steps - p.step) : Number.NaN;
  const count = `${String(p.step).padStart(String(p.steps).length)}/${p.steps}`;
  const time = `${clock(p.elapsedSeconds)} ETA ${clock(eta)}`;
  const { plain, bn, testAccuracy: test } = p;
  const variants = [
    ` ${count} │ no BN: loss ${num(plain.loss)} acc ${pct(plain.accuracy)} test ${pct(test.plain)}` +
      ` │ BN: loss ${num(bn.loss)} acc ${pct(bn.accuracy)} test ${pct(test.bn)} │ ${time}`,
    ` ${count} no BN/BN: loss ${num(plain.loss)}/${num(bn.loss)}` +
      ` acc ${pct(plain.accuracy)}/${pct(bn.accuracy)} test ${pct(test.plain)}/${pct(test.bn)} ${time}`,
    ` ${count} no BN/BN loss ${num(plain.loss)}/${num(bn.loss)}` +
      ` test ${pct(test.plain)}/${pct(test.bn)} ${time}`,
  ];
  const stats = variants.find((v) => v.length + 8 <= columns);
  if (stats === undefined) return (variants[2] as string).trim().slice(0, Math.max(0, columns - 1));
  const width = Math.min(30, columns - stats.length - 3);
  const filled = Math.round((width * p.step) / p.steps);
  return `[${"█".repeat(filled)}${"░".repeat(width - filled)}]${stats}`;
}

/** What the bar writes to: a stream that may be a terminal. */
interface Output {
  write(text: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

export class ProgressBar {
  #out: Output;
  #last: Progress | undefined;
  #drawnAt = 0;
  #drawn = false;

  constructor(out: Output) {
    this.#out = out;
  }

  /** Called after every training step. */
  update(p: Progress): void {
    this.#last = p;
    if (!this.#out.isTTY) return;
    const now = performance.now();
    if (now - this.#drawnAt < 100 && p.step < p.steps) return;
    this.#drawnAt = now;
    this.#draw(p);
  }

  /** Called after every evaluation: redraws the bar, or logs a line when not on a terminal. */
  evaluated(step: number, plain: EvalPoint, bn: EvalPoint): void {
    if (this.#out.isTTY) {
      if (this.#last !== undefined) {
        this.#draw({ ...this.#last, testAccuracy: { plain: plain.accuracy, bn: bn.accuracy } });
      }
      return;
    }
    const elapsed = this.#last?.elapsedSeconds ?? 0;
    this.#out.write(
      `step ${step}: test accuracy without BN ${pct(plain.accuracy)}, with BN ${pct(bn.accuracy)}` +
        (this.#last && step > 0
          ? ` │ training loss ${num(this.#last.plain.loss)} / ${num(this.#last.bn.loss)}`
          : "") +
        ` │ ${clock(elapsed)}\n`,
    );
  }

  #draw(p: Progress): void {
    this.#out.write(`\r${progressLine(p, this.#out.columns || 120)}\x1b[K`);
    this.#drawn = true;
  }

  /** Ends the bar's line. */
  done(): void {
    if (this.#drawn) {
      if (this.#last !== undefined) this.#draw(this.#last);
      this.#out.write("\n");
    }
    this.#drawn = false;
  }
}
