/**
 * The seeded randomness of the demo: a small PRNG, and the networks' initial weights drawn from
 * it, so that runs (and the networks compared within a run) start from exactly the same weights.
 *
 * @module
 */

/** A small, fast, seedable PRNG (mulberry32) with Gaussian samples (Box–Muller). */
export class Rng {
  #state: number;
  #spare: number | undefined;

  constructor(seed: number) {
    this.#state = seed >>> 0;
  }

  /** Uniform in [0, 1). */
  next(): number {
    this.#state = (this.#state + 0x6d2b79f5) >>> 0;
    let t = this.#state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** Standard normal. */
  normal(): number {
    if (this.#spare !== undefined) {
      const s = this.#spare;
      this.#spare = undefined;
      return s;
    }
    const u = 1 - this.next(); // (0, 1]: log(u) is finite
    const r = Math.sqrt(-2 * Math.log(u));
    const theta = 2 * Math.PI * this.next();
    this.#spare = r * Math.sin(theta);
    return r * Math.cos(theta);
  }

  /** Shuffles `a` in place (Fisher–Yates). */
  shuffle(a: Uint32Array): void {
    for (let i = a.length - 1; i > 0; i--) {
      const j = Math.floor(this.next() * (i + 1));
      const t = a[i] as number;
      a[i] = a[j] as number;
      a[j] = t;
    }
  }
}

/** The initial parameters of a network: one weight matrix and bias vector per layer. */
export interface InitialWeights {
  readonly sizes: readonly number[];
  readonly weights: readonly Float32Array[];
  readonly biases: readonly Float32Array[];
}

/**
 * "Small random Gaussian values" (the paper): every weight ~ N(0, std²), biases 0, drawn from a
 * seeded generator so that both networks start from exactly the same weights.
 */
export function gaussianInit(sizes: readonly number[], std: number, seed: number): InitialWeights {
  const rng = new Rng(seed);
  const weights: Float32Array[] = [];
  const biases: Float32Array[] = [];
  for (let l = 0; l + 1 < sizes.length; l++) {
    const w = new Float32Array((sizes[l] as number) * (sizes[l + 1] as number));
    for (let i = 0; i < w.length; i++) w[i] = std * rng.normal();
    weights.push(w);
    biases.push(new Float32Array(sizes[l + 1] as number));
  }
  return { sizes: [...sizes], weights, biases };
}
