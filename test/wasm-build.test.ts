/**
 * The SIMD build really runs v128 instructions in its hot loops, and the scalar build has none.
 *
 * Disassembles dist/batchnorm-simd.wasm and dist/batchnorm-scalar.wasm (built by
 * `npm run build`) with `wasm-objdump -d` from Debian's wabt, which scripts/setup.sh installs.
 * For each hot export (bn_moments, bn_scale_shift, bn_grad_sums, bn_grad_input) the test looks
 * at the function and every function it calls, directly or not (so that moving a loop into a
 * helper the compiler does not inline keeps the test honest), and asserts that inside a `loop`
 * there are both a v128 load and float32x4 arithmetic (f32x4.add/sub/mul). The scalar build
 * must contain no SIMD instruction at all (no v128.*, i8x16.*, …, f64x2.*).
 */
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const HOT = ["bn_moments", "bn_scale_shift", "bn_grad_sums", "bn_grad_input"] as const;
const SIMD_OP = /^(v128|i8x16|i16x8|i32x4|i64x2|f32x4|f64x2)\./;
const V128_LOAD = /^v128\.load/;
const F32X4_ARITH = /^f32x4\.(add|sub|mul)$/;

const distPath = (name: string) => fileURLToPath(new URL(`../dist/${name}`, import.meta.url));

interface Func {
  index: number;
  name: string | undefined;
  /** Every instruction's mnemonic, in order. */
  ops: string[];
  /** Mnemonics of the instructions that sit inside at least one `loop`. */
  loopOps: string[];
  /** Indices of the functions it calls. */
  calls: Set<number>;
}

/** Runs `wasm-objdump -d` on a dist/ file, with clear errors when the tool or file is missing. */
function disassemble(file: string): string {
  const path = distPath(file);
  if (!existsSync(path)) {
    throw new Error(`${path} is missing: run \`npm run build\` first`);
  }
  try {
    return execFileSync("wasm-objdump", ["-d", path], {
      encoding: "utf8",
      maxBuffer: 64 * 1024 * 1024,
    });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") {
      throw new Error(
        "wasm-objdump not found: it comes with Debian's `wabt` package, which `npm run setup` " +
          "(scripts/setup.sh) installs; or install it by hand: apt-get install wabt",
      );
    }
    throw error;
  }
}

/** Parses wasm-objdump's disassembly into functions with their instructions and calls. */
function parse(text: string): Map<number, Func> {
  const funcs = new Map<number, Func>();
  let current: Func | undefined;
  let stack: string[] = [];
  for (const line of text.split("\n")) {
    const header = /^[0-9a-f]+ func\[(\d+)\](?: <([^>]*)>)?:$/.exec(line.trim());
    if (header !== null) {
      current = {
        index: Number(header[1]),
        name: header[2],
        ops: [],
        loopOps: [],
        calls: new Set(),
      };
      funcs.set(current.index, current);
      stack = [];
      continue;
    }
    const bar = line.indexOf("| ");
    if (current === undefined || bar < 0) continue;
    const text = line.slice(bar + 2).trim();
    if (text === "" || text.startsWith("local[")) continue;
    const [op = "", arg] = text.split(/\s+/);
    current.ops.push(op);
    if (stack.includes("loop")) current.loopOps.push(op);
    if (op === "block" || op === "loop" || op === "if") stack.push(op);
    else if (op === "end") stack.pop();
    else if (op === "call") current.calls.add(Number(arg));
  }
  return funcs;
}

/** The function and everything it calls, transitively. */
function reachable(funcs: Map<number, Func>, root: Func): Func[] {
  const seen = new Map<number, Func>([[root.index, root]]);
  const todo = [root];
  for (let f = todo.pop(); f !== undefined; f = todo.pop()) {
    for (const callee of f.calls) {
      const g = funcs.get(callee);
      if (g !== undefined && !seen.has(callee)) {
        seen.set(callee, g);
        todo.push(g);
      }
    }
  }
  return [...seen.values()];
}

function byName(funcs: Map<number, Func>, name: string): Func {
  const f = [...funcs.values()].find((g) => g.name === name);
  if (f === undefined) {
    throw new Error(`no function named ${name} in the disassembly (is it still exported?)`);
  }
  return f;
}

/** Disassembles and parses each build once, inside the tests (so a missing tool fails them). */
const parsed = new Map<string, Map<number, Func>>();
function functionsOf(file: string): Map<number, Func> {
  let funcs = parsed.get(file);
  if (funcs === undefined) {
    funcs = parse(disassemble(file));
    parsed.set(file, funcs);
  }
  return funcs;
}

describe("the SIMD build runs v128 instructions in its hot loops", () => {
  it.each(HOT)("%s: v128 loads and f32x4 arithmetic inside a loop", (name) => {
    const funcs = functionsOf("batchnorm-simd.wasm");
    const reach = reachable(funcs, byName(funcs, name));
    const loopOps = reach.flatMap((f) => f.loopOps);
    const loads = loopOps.filter((op) => V128_LOAD.test(op));
    const arith = loopOps.filter((op) => F32X4_ARITH.test(op));
    const where = reach.map((f) => f.name ?? `func[${f.index}]`).join(", ");
    expect(loads.length, `v128 loads in loops of ${where}`).toBeGreaterThan(0);
    expect(arith.length, `f32x4 add/sub/mul in loops of ${where}`).toBeGreaterThan(0);
  });

  it("reports 4 lanes at run time", async () => {
    const { instance } = await WebAssembly.instantiate(
      readFileSync(distPath("batchnorm-simd.wasm")),
    );
    expect((instance.exports.bn_lanes as () => number)()).toBe(4);
  });
});

describe("the scalar build has no SIMD instruction", () => {
  it("exports the hot functions, with float32 code in them (the parse found something)", () => {
    const funcs = functionsOf("batchnorm-scalar.wasm");
    for (const name of HOT) {
      const ops = reachable(funcs, byName(funcs, name)).flatMap((f) => f.loopOps);
      expect(
        ops.some((op) => /^f32\.(add|mul)$/.test(op)),
        `${name} has f32 arithmetic in loops`,
      ).toBe(true);
    }
  });

  it("contains no v128, i8x16, i16x8, i32x4, i64x2, f32x4 or f64x2 instruction", () => {
    const funcs = functionsOf("batchnorm-scalar.wasm");
    const simd = [...funcs.values()].flatMap((f) =>
      f.ops.filter((op) => SIMD_OP.test(op)).map((op) => `${f.name ?? `func[${f.index}]`}: ${op}`),
    );
    expect(simd).toEqual([]);
  });

  it("reports 1 lane at run time", async () => {
    const { instance } = await WebAssembly.instantiate(
      readFileSync(distPath("batchnorm-scalar.wasm")),
    );
    expect((instance.exports.bn_lanes as () => number)()).toBe(1);
  });
});
