/**
 * Reading Fashion-MNIST (or MNIST): IDX files, gzipped or not.
 *
 * The IDX format (http://yann.lecun.com/exdb/mnist/) is a big-endian header — two zero bytes, a
 * type code (0x08 = unsigned byte), the number of dimensions — then one 32-bit big-endian size per
 * dimension, then the values in row-major order. Images are `[count, 28, 28]` bytes, labels
 * `[count]` bytes.
 *
 * @module
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";

/** Where Debian's `dataset-fashion-mnist` package puts the IDX files. */
export const DEBIAN_DATA_DIR = "/usr/share/datasets/fashion-mnist";

/** An IDX tensor of unsigned bytes. */
export interface IdxArray {
  readonly shape: readonly number[];
  readonly data: Uint8Array;
}

/** A labelled image set: `images` holds `count` rows of `pixels` bytes (0–255), row-major. */
export interface ImageSet {
  readonly count: number;
  readonly pixels: number;
  readonly images: Uint8Array;
  /** Class index 0–9 of each image. */
  readonly labels: Uint8Array;
}

/** Fashion-MNIST's ten classes, in label order. */
export const CLASS_NAMES = [
  "T-shirt/top",
  "Trouser",
  "Pullover",
  "Dress",
  "Coat",
  "Sandal",
  "Shirt",
  "Sneaker",
  "Bag",
  "Ankle boot",
] as const;

/** Parses an IDX file's bytes (gunzipped first when they start with the gzip magic number). */
export function parseIdx(bytes: Uint8Array, name = "IDX data"): IdxArray {
  const raw = bytes[0] === 0x1f && bytes[1] === 0x8b ? new Uint8Array(gunzipSync(bytes)) : bytes;
  if (raw.length < 4 || raw[0] !== 0 || raw[1] !== 0) {
    throw new Error(`${name}: not an IDX file (it must start with two zero bytes)`);
  }
  if (raw[2] !== 0x08) {
    throw new Error(
      `${name}: IDX type code 0x${(raw[2] ?? 0).toString(16)} is not supported (only 0x08, unsigned bytes)`,
    );
  }
  const rank = raw[3] as number;
  const header = 4 + 4 * rank;
  if (rank === 0 || raw.length < header) throw new Error(`${name}: truncated IDX header`);
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const shape: number[] = [];
  for (let i = 0; i < rank; i++) shape.push(view.getUint32(4 + 4 * i, false));
  const length = shape.reduce((p, d) => p * d, 1);
  if (raw.length !== header + length) {
    throw new Error(
      `${name}: shape [${shape.join(", ")}] needs ${header + length} bytes, the file has ${raw.length}`,
    );
  }
  return { shape, data: raw.subarray(header) };
}

/** Reads `<dir>/<base>` or `<dir>/<base>.gz`, whichever exists (the uncompressed one first). */
export function readIdx(dir: string, base: string): IdxArray {
  for (const name of [base, `${base}.gz`]) {
    const path = join(dir, name);
    if (existsSync(path)) return parseIdx(readFileSync(path), path);
  }
  throw new Error(`${join(dir, base)}[.gz] not found`);
}

/** The four files of a split, without the optional `.gz`. */
function files(split: "train" | "t10k") {
  return { images: `${split}-images-idx3-ubyte`, labels: `${split}-labels-idx1-ubyte` };
}

/** Whether `dir` holds the four IDX files (gzipped or not). */
export function hasDataset(dir: string): boolean {
  return (["train", "t10k"] as const).every((split) =>
    Object.values(files(split)).every(
      (base) => existsSync(join(dir, base)) || existsSync(join(dir, `${base}.gz`)),
    ),
  );
}

/** Reads one split (`train`: 60,000 images; `t10k`: 10,000) and checks that the files agree. */
export function readSplit(dir: string, split: "train" | "t10k"): ImageSet {
  const names = files(split);
  const images = readIdx(dir, names.images);
  const labels = readIdx(dir, names.labels);
  const [count = 0, ...rest] = images.shape;
  if (images.shape.length !== 3 || labels.shape.length !== 1 || labels.shape[0] !== count) {
    throw new Error(
      `${dir}: ${split} images [${images.shape.join(", ")}] and labels [${labels.shape.join(", ")}] do not match`,
    );
  }
  for (const label of labels.data) {
    if (label > 9) throw new Error(`${dir}: ${split} label ${label} is not a class index 0–9`);
  }
  const pixels = rest.reduce((p, d) => p * d, 1);
  return { count, pixels, images: images.data, labels: labels.data };
}

/** Both splits of the dataset in `dir`. */
export function loadFashionMnist(dir: string): { train: ImageSet; test: ImageSet } {
  return { train: readSplit(dir, "train"), test: readSplit(dir, "t10k") };
}

/** Encodes unsigned bytes as an IDX file (the inverse of {@link parseIdx}; for tests). */
export function encodeIdx(shape: readonly number[], data: Uint8Array): Uint8Array {
  const header = 4 + 4 * shape.length;
  const out = new Uint8Array(header + data.length);
  const view = new DataView(out.buffer);
  out[2] = 0x08;
  out[3] = shape.length;
  shape.forEach((d, i) => {
    view.setUint32(4 + 4 * i, d, false);
  });
  out.set(data, header);
  return out;
}
