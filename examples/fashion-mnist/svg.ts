/**
 * Line charts as standalone SVG text: no dependencies, readable output, a white background so
 * they show on light and dark pages alike.
 *
 * @module
 */

/** A polyline of `[x, y]` points. */
export interface Series {
  label: string;
  color: string;
  points: readonly (readonly [number, number])[];
  /** `stroke-dasharray`, e.g. `"6 4"`; solid when absent. */
  dash?: string;
  /** Stroke width in pixels (default 2). */
  width?: number;
}

/** A shaded area between two curves sampled at the same x values. */
export interface Band {
  color: string;
  lower: readonly (readonly [number, number])[];
  upper: readonly (readonly [number, number])[];
}

export interface ChartOptions {
  title: string;
  xLabel: string;
  yLabel: string;
  series: readonly Series[];
  bands?: readonly Band[];
  /** Axis ranges; by default they fit the data (and the bands). */
  xRange?: readonly [number, number];
  yRange?: readonly [number, number];
  /** Where the legend goes (default bottom-right). */
  legend?: "top-left" | "top-right" | "bottom-left" | "bottom-right";
  width?: number;
  height?: number;
}

/** About `count` round tick values (steps of 1, 2 or 5 × 10ⁿ) covering [min, max]. */
export function niceTicks(min: number, max: number, count = 6): number[] {
  if (!(max > min)) return [min];
  const raw = (max - min) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = ([1, 2, 2.5, 5, 10].find((m) => m * mag >= raw) ?? 10) * mag;
  const ticks: number[] = [];
  for (let v = Math.ceil(min / step - 1e-9) * step; v <= max + step * 1e-9; v += step) {
    ticks.push(Math.abs(v) < step * 1e-9 ? 0 : v);
  }
  return ticks;
}

/** The range of the values, padded by `pad` of its width on each side. */
export function extent(values: readonly number[], pad = 0.05): [number, number] {
  const finite = values.filter(Number.isFinite);
  if (finite.length === 0) return [0, 1];
  let lo = Math.min(...finite);
  let hi = Math.max(...finite);
  if (lo === hi) {
    lo -= 0.5;
    hi += 0.5;
  }
  const d = (hi - lo) * pad;
  return [lo - d, hi + d];
}

function escapeXml(s: string): string {
  return s.replace(
    /[&<>"]/g,
    (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c] ?? c,
  );
}

/** Formats a tick value without float noise: 0.30000000000000004 → "0.3", 10000 → "10k". */
function formatTick(v: number, step: number): string {
  if (Math.abs(v) >= 1000 && step >= 1000) return `${+(v / 1000).toFixed(3)}k`;
  const decimals = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
  return (+v.toFixed(decimals + 1)).toString();
}

const r2 = (v: number) => Math.round(v * 100) / 100;

/** Renders a line chart as an SVG document. */
export function lineChart(options: ChartOptions): string {
  const width = options.width ?? 640;
  const height = options.height ?? 400;
  const margin = { left: 64, right: 20, top: 40, bottom: 52 };
  const bands = options.bands ?? [];
  const allPoints = [
    ...options.series.flatMap((s) => s.points),
    ...bands.flatMap((b) => [...b.lower, ...b.upper]),
  ];
  const [x0, x1] =
    options.xRange ??
    extent(
      allPoints.map((p) => p[0]),
      0,
    );
  const [y0, y1] = options.yRange ?? extent(allPoints.map((p) => p[1]));
  const pw = width - margin.left - margin.right;
  const ph = height - margin.top - margin.bottom;
  const sx = (x: number) => r2(margin.left + ((x - x0) / (x1 - x0 || 1)) * pw);
  const sy = (y: number) => r2(margin.top + ph - ((y - y0) / (y1 - y0 || 1)) * ph);
  const path = (pts: readonly (readonly [number, number])[]) =>
    pts
      .filter((p) => Number.isFinite(p[1]))
      .map((p, i) => `${i === 0 ? "M" : "L"}${sx(p[0])},${sy(p[1])}`)
      .join(" ");

  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="Helvetica, Arial, sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="${width / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">${escapeXml(options.title)}</text>`,
  );
  // Grid and ticks.
  const xt = niceTicks(x0, x1, 8);
  const yt = niceTicks(y0, y1, 6);
  const xStep = (xt[1] ?? x1) - (xt[0] ?? x0) || 1;
  const yStep = (yt[1] ?? y1) - (yt[0] ?? y0) || 1;
  out.push(`<g stroke="#e5e5e5" stroke-width="1">`);
  for (const v of xt)
    out.push(`<line x1="${sx(v)}" y1="${margin.top}" x2="${sx(v)}" y2="${margin.top + ph}"/>`);
  for (const v of yt)
    out.push(`<line x1="${margin.left}" y1="${sy(v)}" x2="${margin.left + pw}" y2="${sy(v)}"/>`);
  out.push("</g>");
  out.push(`<g fill="#333333">`);
  for (const v of xt) {
    out.push(
      `<text x="${sx(v)}" y="${margin.top + ph + 18}" text-anchor="middle">${formatTick(v, xStep)}</text>`,
    );
  }
  for (const v of yt) {
    out.push(
      `<text x="${margin.left - 8}" y="${sy(v) + 4}" text-anchor="end">${formatTick(v, yStep)}</text>`,
    );
  }
  out.push(
    `<text x="${margin.left + pw / 2}" y="${height - 12}" text-anchor="middle">${escapeXml(options.xLabel)}</text>`,
    `<text transform="translate(16 ${margin.top + ph / 2}) rotate(-90)" text-anchor="middle">${escapeXml(options.yLabel)}</text>`,
    "</g>",
  );
  out.push(
    `<rect x="${margin.left}" y="${margin.top}" width="${pw}" height="${ph}" fill="none" stroke="#999999"/>`,
  );
  // Data, clipped to the plot area.
  out.push(
    `<clipPath id="plot"><rect x="${margin.left}" y="${margin.top}" width="${pw}" height="${ph}"/></clipPath>`,
    `<g clip-path="url(#plot)" fill="none" stroke-linejoin="round" stroke-linecap="round">`,
  );
  for (const b of bands) {
    const upper = path(b.upper);
    const lower = [...b.lower]
      .reverse()
      .filter((p) => Number.isFinite(p[1]))
      .map((p) => `L${sx(p[0])},${sy(p[1])}`)
      .join(" ");
    if (upper !== "")
      out.push(
        `<path d="${upper} ${lower} Z" fill="${b.color}" fill-opacity="0.15" stroke="none"/>`,
      );
  }
  for (const s of options.series) {
    const dash = s.dash === undefined ? "" : ` stroke-dasharray="${s.dash}"`;
    out.push(
      `<path d="${path(s.points)}" stroke="${s.color}" stroke-width="${s.width ?? 2}"${dash}/>`,
    );
  }
  out.push("</g>");
  // Legend.
  const where = options.legend ?? "bottom-right";
  const lw = Math.max(...options.series.map((s) => s.label.length)) * 7 + 48;
  const lh = options.series.length * 18 + 10;
  const lx = where.endsWith("left") ? margin.left + 10 : margin.left + pw - lw - 10;
  const ly = where.startsWith("top") ? margin.top + 10 : margin.top + ph - lh - 10;
  out.push(
    `<g><rect x="${lx}" y="${ly}" width="${lw}" height="${lh}" fill="#ffffff" fill-opacity="0.9" stroke="#cccccc"/>`,
  );
  options.series.forEach((s, i) => {
    const y = ly + 14 + i * 18;
    const dash = s.dash === undefined ? "" : ` stroke-dasharray="${s.dash}"`;
    out.push(
      `<line x1="${lx + 8}" y1="${y}" x2="${lx + 34}" y2="${y}" stroke="${s.color}" stroke-width="${s.width ?? 2}"${dash}/>`,
      `<text x="${lx + 40}" y="${y + 4}" fill="#333333">${escapeXml(s.label)}</text>`,
    );
  });
  out.push("</g>", "</svg>", "");
  return out.join("\n");
}
