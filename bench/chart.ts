/**
 * The README's chart: speedup over the plain JS loop (`plain.ts`), per op and shape, on a log
 * scale, as a self-contained SVG.
 *
 * Also runnable on its own, to redraw from a results file:
 * `node --import tsx bench/chart.ts [bench/results/latest.json] [docs/bench.svg]`
 *
 * @module
 */
import { readFileSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import type { BenchResults, Impl, OpId, Path } from "./types.js";

const SERIES: { impl: Impl; path: Path; label: string; color: string }[] = [
  { impl: "simd", path: "zero-copy", label: "SIMD wasm, zero-copy", color: "#1b6ac9" },
  { impl: "simd", path: "copy API", label: "SIMD wasm, copy API", color: "#7fb2f0" },
  { impl: "scalar", path: "zero-copy", label: "scalar wasm, zero-copy", color: "#2e9e5b" },
  { impl: "js", path: "zero-copy", label: "JS back end, zero-copy", color: "#8a5cc2" },
  { impl: "tfjs-wasm", path: "", label: "TF.js wasm", color: "#e08a1e" },
  { impl: "tfjs-cpu", path: "", label: "TF.js cpu", color: "#c23b3b" },
];

const OPS: { id: OpId; label: string }[] = [
  { id: "train", label: "training forward" },
  { id: "infer", label: "inference forward" },
  { id: "bwd", label: "backward" },
  { id: "fwdbwd", label: "forward + backward" },
];

const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

export function renderChart(results: BenchResults): string {
  const shapes = [...new Set(results.cases.map((c) => c.shapeLabel))];
  const barW = 12;
  const groupGap = 26;
  const groupW = SERIES.length * barW + groupGap;
  const left = 58;
  const panelW = shapes.length * groupW;
  const panelH = 190;
  const top = 84;
  const panelGap = 96;
  const width = left + panelW + 30;
  const height = top + OPS.length * (panelH + panelGap) - 20;
  const lo = 0.001;
  const hi = 100;
  const y = (v: number) =>
    panelH * (1 - (Math.log10(v) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo)));
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif" font-size="11">`,
    `<rect width="100%" height="100%" fill="#fff"/>`,
    `<text x="${left}" y="20" font-size="15" font-weight="600">Speedup over a plain JS loop, log scale</text>`,
    `<text x="${left}" y="37" fill="#555">${esc(
      `Node ${results.meta.node} · ${results.meta.cpu}, ${results.meta.cores} cores · ${String(results.meta.date).slice(0, 10)} · medians of interleaved samples`,
    )}</text>`,
    `<text x="${left}" y="52" fill="#555">TF.js runs the channels-last shapes only; its backward (pale) is its fwd+bwd − training fwd.</text>`,
  );
  // Legend.
  let lx = left;
  for (const s of SERIES) {
    out.push(
      `<rect x="${lx}" y="62" width="10" height="10" fill="${s.color}"/>`,
      `<text x="${lx + 14}" y="71">${esc(s.label)}</text>`,
    );
    lx += 14 + s.label.length * 6 + 14;
  }
  OPS.forEach((op, p) => {
    const y0 = top + 20 + p * (panelH + panelGap);
    out.push(`<g transform="translate(0 ${y0})">`);
    out.push(`<text x="${left}" y="-8" font-size="13" font-weight="600">${esc(op.label)}</text>`);
    for (const v of [0.001, 0.01, 0.1, 1, 10, 100]) {
      const yy = y(v).toFixed(1);
      out.push(
        `<line x1="${left}" x2="${left + panelW}" y1="${yy}" y2="${yy}" stroke="${v === 1 ? "#333" : "#ddd"}" stroke-width="${v === 1 ? 1.2 : 1}"/>`,
        `<text x="${left - 6}" y="${yy}" dy="4" text-anchor="end" fill="#555">${v}×</text>`,
      );
    }
    shapes.forEach((shape, g) => {
      const c = results.cases.find((d) => d.shapeLabel === shape && d.op === op.id);
      const gx = left + groupGap / 2 + g * groupW;
      const [kind, dims] = shape.split(" ");
      const perCall = results.cases.some((d) => d.shapeLabel === shape && d.perCall);
      out.push(
        `<text x="${gx + (SERIES.length * barW) / 2}" y="${panelH + 16}" text-anchor="middle">${esc(perCall ? "per call" : (kind ?? ""))}</text>`,
        `<text x="${gx + (SERIES.length * barW) / 2}" y="${panelH + 29}" text-anchor="middle" fill="#555" font-size="10">${esc((dims ?? "").replace(/x/g, "×"))}</text>`,
      );
      if (c === undefined) return;
      SERIES.forEach((s, i) => {
        const r = c.results.find((d) => d.impl === s.impl && d.path === s.path);
        if (r === undefined || !(r.speedupVsPlain > 0)) return;
        const v = Math.min(hi, Math.max(lo, r.speedupVsPlain));
        const y1 = y(1);
        const yv = y(v);
        const x = gx + i * barW;
        const title = `${shape} ${op.label}, ${s.label}: ${r.speedupVsPlain.toFixed(2)}× (${r.medianMs.toFixed(3)} ms${r.derived ? ", derived" : ""})`;
        out.push(
          `<rect x="${x}" y="${Math.min(y1, yv).toFixed(1)}" width="${barW - 1}" height="${Math.max(1, Math.abs(yv - y1)).toFixed(1)}" fill="${s.color}"${r.derived ? ` fill-opacity="0.55"` : ""}><title>${esc(title)}</title></rect>`,
        );
        if (s.impl === "simd" && s.path === "zero-copy") {
          out.push(
            `<text x="${x + barW / 2}" y="${(v >= 1 ? yv - 3 : yv + 10).toFixed(1)}" text-anchor="middle" font-size="9" fill="${s.color}">${r.speedupVsPlain.toFixed(r.speedupVsPlain >= 10 ? 0 : r.speedupVsPlain >= 1 ? 1 : 2)}</text>`,
          );
        }
      });
    });
    out.push("</g>");
  });
  out.push("</svg>");
  return `${out.join("\n")}\n`;
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  const input = process.argv[2] ?? "bench/results/latest.json";
  const output = process.argv[3] ?? "docs/bench.svg";
  writeFileSync(output, renderChart(JSON.parse(readFileSync(input, "utf8")) as BenchResults));
  console.log(`wrote ${output}`);
}
