/**
 * What a peer test measured, printed with PEERS_REPORT=1 (for choosing and reporting
 * tolerances), and its negative controls, recorded in units of their tolerance.
 */
import { afterAll, expect } from "vitest";

export function peerReport(title: string) {
  const measured: Record<string, number> = {};
  afterAll(() => {
    if (process.env.PEERS_REPORT) console.log(title, measured);
  });
  /** Asserts that a negative control misses by more than `factor`·tol; records miss/tol. */
  const misses = (key: string, miss: number, tol: number, factor: number) => {
    measured[`${key} (control, ×tol)`] = miss / tol;
    expect(miss, key).toBeGreaterThan(factor * tol);
  };
  return { measured, misses };
}
