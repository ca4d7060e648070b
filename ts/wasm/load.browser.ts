/**
 * Browsers: the .wasm files are fetched, by default from next to this code (`default-url.ts`).
 *
 * @module
 */
import type { Platform } from "../init.js";
import { browserThreads } from "../threads/platform.browser.js";
import { defaultUrl } from "./default-url.js";

export const browserPlatform: Platform = {
  defaultUrl,
  toUrl: (source) => new URL(source, globalThis.location?.href),
  fetch: (url) => fetch(url),
  ...(browserThreads === undefined ? {} : { threads: browserThreads }),
};
