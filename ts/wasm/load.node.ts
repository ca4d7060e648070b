/**
 * Node: the .wasm files are read from disk, next to this module once bundled into dist/
 * (Node's fetch cannot read `file:` URLs).
 *
 * @module
 */
import { readFile } from "node:fs/promises";
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import type { Platform } from "../init.js";
import { nodeThreads } from "../threads/platform.node.js";
import { defaultUrl } from "./default-url.js";

export const nodePlatform: Platform = {
  defaultUrl,
  // A scheme of two letters or more is a URL; anything else (C:\ too) is a file path.
  toUrl: (source) =>
    /^[a-z][a-z0-9+.-]+:/i.test(source) ? new URL(source) : pathToFileURL(resolve(source)),
  async fetch(url) {
    if (url.protocol === "file:") {
      const bytes = await readFile(url);
      return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
    }
    return fetch(url);
  },
  threads: nodeThreads,
};
