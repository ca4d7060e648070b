/**
 * Browsers: workers run the pool's worker source from a `Blob` URL (no separate file for a
 * bundler to find), and get their data in a first message.
 *
 * @module
 */
import type { ThreadPlatform } from "./pool.js";

export const browserThreads: ThreadPlatform | undefined =
  typeof Worker === "function" && typeof Blob === "function" && typeof URL === "function"
    ? {
        cores: () => globalThis.navigator?.hardwareConcurrency ?? 1,
        spawn(source, data, onMessage, onError) {
          const url = URL.createObjectURL(new Blob([source], { type: "text/javascript" }));
          const worker = new Worker(url);
          worker.onmessage = (event) => onMessage(event.data);
          worker.onerror = (event) => onError(new Error(event.message));
          worker.postMessage(data);
          return {
            terminate: () => {
              worker.terminate();
              URL.revokeObjectURL(url);
            },
          };
        },
      }
    : undefined;
