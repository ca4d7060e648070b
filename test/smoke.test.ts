import { describe, expect, it } from "vitest";
import { BatchNorm } from "../ts/index.node.js";
import { BACKENDS, initFromDist } from "./setup-backends.js";

describe("init", () => {
  it("loads both wasm builds and picks SIMD on Node 20", async () => {
    const result = await initFromDist();
    expect(result.backend).toBe("simd");
    expect(result.available).toEqual(["simd", "scalar", "js"]);
    for (const backend of BACKENDS) expect(new BatchNorm(3, { backend }).backend).toBe(backend);
  });
});
