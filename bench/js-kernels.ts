/**
 * The pure-JS back end's four kernels against the plain JS loop's (`plain.ts`), kernel by
 * kernel, at every benchmark shape of at least 16 K values, in interleaved rounds:
 * `node --import tsx bench/js-kernels.ts [rounds] [filter]`. "×" above 1 is the back end
 * being faster.
 *
 * @module
 */
import { jsBackend } from "./lib.js";
import * as plain from "./plain.js";
import { SHAPES, shapeLabel } from "./plan.js";
import { makeInputs } from "./rig.js";
import { median } from "./stats.js";

const rounds = Number(process.argv[2] ?? 15);
const filter = process.argv[3];
const now = () => performance.now();
const KERNELS = ["moments", "scaleShift", "gradSums", "gradInput"];

/** Mean ms per run of `f` over `k` runs. */
function sample(f: () => void, k: number): number {
  const t0 = now();
  for (let i = 0; i < k; i++) f();
  return (now() - t0) / k;
}

console.log(`${"shape".padEnd(20)}${KERNELS.map((k) => k.padStart(23)).join("")}`);
console.log(`${"".padEnd(20)}${"   plain ms   js ms    ×".repeat(4)}`);
for (const spec of SHAPES) {
  const input = makeInputs(spec);
  if (input.n < 16384 || (filter !== undefined && !shapeLabel(spec).includes(filter))) continue;
  const d = plain.plainDims(input);
  const C = d.channels;
  // Per-channel parameters: float64 for the plain loop, the back end's float32 buffers for it.
  const p = Array.from({ length: 4 }, (_, i) =>
    Float64Array.from({ length: C }, (_, c) => 0.5 + Math.sin(c + i)),
  );
  const f64 = (i: number) => p[i] as Float64Array;
  const buf = (a: ArrayLike<number>) => {
    const b = jsBackend.alloc(a.length);
    b.view().set(a);
    return b;
  };
  const b = p.map(buf);
  const f32 = (i: number) => b[i] as ReturnType<typeof buf>;
  const x = buf(input.x);
  const dy = buf(input.dy);
  const out = jsBackend.alloc(input.n);
  const ws = jsBackend.allocWorkspace(C);
  const y = new Float32Array(input.n);
  const s = [new Float64Array(C), new Float64Array(C)] as const;
  const pairs: [() => void, () => void][] = [
    [
      () => plain.moments(input.x, d, s[0], s[1]),
      () => jsBackend.moments(x, d, ws, f32(2), f32(3)),
    ],
    [
      () => plain.scaleShift(input.x, y, d, f64(0), f64(1), f64(2)),
      () => jsBackend.scaleShift(x, out, d, f32(0), f32(1), f32(2), ws),
    ],
    [
      () => plain.gradSums(input.x, input.dy, d, f64(0), s[0], s[1]),
      () => jsBackend.gradSums(x, dy, d, f32(0), ws, f32(2), f32(3)),
    ],
    [
      () => plain.gradInput(input.x, input.dy, y, d, f64(0), f64(1), f64(2), f64(3)),
      () => jsBackend.gradInput(x, dy, out, d, f32(0), f32(1), f32(2), f32(3), ws),
    ],
  ];
  const runs = pairs.map((pair) =>
    pair.map((f) => {
      const t0 = now();
      while (now() - t0 < 60) f(); // warm up: compiled and optimized
      return { f, k: Math.max(1, Math.round(3 / sample(f, 3))), samples: [] as number[] };
    }),
  );
  for (let r = 0; r < rounds; r++)
    for (const pair of runs) for (const t of pair) t.samples.push(sample(t.f, t.k));
  const cells = runs.map(([a, j]) => {
    const [pm, jm] = [median(a?.samples ?? []), median(j?.samples ?? [])];
    return `${pm.toFixed(3).padStart(11)}${jm.toFixed(3).padStart(8)}${(pm / jm).toFixed(2).padStart(5)}`;
  });
  console.log(`${shapeLabel(spec).padEnd(20)}${cells.join("")}`);
}
