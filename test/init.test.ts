/**
 * init() in one process of its own (this file): a failed call is not kept, a SIMD build that
 * fails to load falls back to the scalar build and says why, and a later call with other
 * sources is an error rather than silently ignored.
 */
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { BatchNorm, init } from "../ts/index.node.js";
import { distPath } from "./setup-backends.js";

describe("init()", () => {
  it("falls back to the scalar build when the SIMD build fails, and refuses other sources later", async () => {
    const scalar = distPath("batchnorm-scalar.wasm");
    // A failed call is not kept: the next one, with other sources, loads.
    await expect(
      init({ simd: distPath("batchnorm-simd.wasm"), scalar: "/no/such/file.wasm" }),
    ).rejects.toThrow(/no such file/);

    const notWasm = new TextEncoder().encode("<!doctype html>");
    const result = await init({ simd: notWasm, scalar });
    expect(result.backend).toBe("scalar");
    expect(result.available).toEqual(["scalar", "js"]);
    expect(result.reason).toMatch(
      /the SIMD build failed to load, so the scalar build is used: .*the simd build from the bytes given is not a WebAssembly file/,
    );
    expect(new BatchNorm(3).backend).toBe("scalar");
    expect(() => new BatchNorm(3, { backend: "simd" })).toThrow(
      /backend "simd" is not available here \(the SIMD build failed to load/,
    );

    // The same sources, or none (whatever is loaded), give the same result; others are refused.
    await expect(init()).resolves.toEqual(result);
    await expect(init({ scalar })).resolves.toEqual(result);
    await expect(init({ simd: distPath("batchnorm-simd.wasm") })).rejects.toThrow(
      /init: already called with other sources for the wasm builds/,
    );
    await expect(init({ scalar: readFileSync(scalar) })).rejects.toThrow(
      /already called with other sources/,
    );
    await expect(init("simd" as never)).rejects.toThrow(
      /init: options must be an object, got "simd"/,
    );
  });
});
