/**
 * The code of a pool's worker, as a string: Node runs it with `new Worker(code, { eval: true })`
 * and browsers from a `Blob` URL, so no bundler has to find (or rewrite the address of) a
 * separate worker file. Plain JavaScript that runs in both.
 *
 * The worker instantiates the shared-memory build over the pool's memory, points its
 * `__stack_pointer` at a stack of its own, says it is ready, and then loops: it waits for the
 * control block's generation to change, runs `bn_work` (which claims chunks of the published
 * job until none is left) with its scratch slot, and wakes the caller when it finished any.
 * See `pool.ts` for the control block.
 *
 * @module
 */

export const WORKER_SOURCE = `"use strict";
const start = (data, post) => {
  WebAssembly.instantiate(data.module, { env: { memory: data.memory } }).then((instance) => {
    const e = instance.exports;
    e.__stack_pointer.value = data.stackTop;
    const ctl = new Int32Array(data.memory.buffer, data.control, 8);
    post({ ready: true });
    let seen = data.generation;
    for (;;) {
      let spins = data.spin;
      while (spins-- > 0 && Atomics.load(ctl, 0) === seen) {}
      if (Atomics.load(ctl, 0) === seen) Atomics.wait(ctl, 0, seen, 1000);
      if (Atomics.load(ctl, 2) !== 0) break;
      const generation = Atomics.load(ctl, 0);
      if (generation === seen) continue;
      seen = generation;
      try {
        if (e.bn_work(data.control, data.slot) > 0) Atomics.notify(ctl, 1);
      } catch (error) {
        Atomics.store(ctl, 4, 1);
        Atomics.notify(ctl, 1);
        post({ error: String((error && error.stack) || error) });
      }
    }
    post({ stopped: true });
  }, (error) => post({ error: String((error && error.stack) || error) }));
};
if (typeof require === "function" && typeof self === "undefined") {
  const threads = require("node:worker_threads");
  start(threads.workerData, (message) => threads.parentPort.postMessage(message));
} else {
  self.onmessage = (event) => {
    self.onmessage = null;
    start(event.data, (message) => self.postMessage(message));
  };
}
`;
