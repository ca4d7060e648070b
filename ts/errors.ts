/**
 * How bad input is described: every error names the argument, what was expected and what came.
 * These helpers format the "what came" part and check the common argument kinds.
 *
 * @module
 */

/** A value as an error message shows it: strings quoted, arrays spelled out, objects by type. */
export function show(v: unknown): string {
  if (typeof v === "string") return JSON.stringify(v);
  if (typeof v === "bigint") return `${v}n`;
  if (Array.isArray(v)) return `[${v.map(show).join(", ")}]`;
  if (typeof v === "object" && v !== null) return typeName(v);
  return String(v);
}

/** The type of a value as a user would name it: `Float64Array`, `null`, `string`. */
export function typeName(v: unknown): string {
  if (v === null) return "null";
  if (typeof v === "object") return (v as object).constructor?.name ?? "object";
  return typeof v;
}

/**
 * Whether `v` is a typed array of that kind, also when it comes from another realm (an
 * iframe, a `vm` context, a test environment), where `instanceof` is false.
 */
export function isTyped(v: unknown, kind: "Float32Array"): v is Float32Array;
export function isTyped(v: unknown, kind: "Float64Array"): v is Float64Array;
export function isTyped(v: unknown, kind: string): boolean {
  return ArrayBuffer.isView(v) && Object.prototype.toString.call(v) === `[object ${kind}]`;
}

/** Checks that `value` is one of `choices`; the error lists them. */
export function checkChoice<T extends string>(
  value: unknown,
  choices: readonly T[],
  where: string,
  name: string,
): T {
  if (!(choices as readonly unknown[]).includes(value)) {
    const list = choices.map((c) => JSON.stringify(c));
    const spelled = `${list.slice(0, -1).join(", ")} or ${list[list.length - 1]}`;
    throw new RangeError(`${where}: ${name} must be ${spelled}, got ${show(value)}`);
  }
  return value as T;
}

/** Checks that `value` is a plain options object (or undefined, read as `{}`). */
export function checkOptions(value: unknown, where: string, name = "options"): object {
  if (value === undefined) return {};
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new TypeError(`${where}: ${name} must be an object, got ${show(value)}`);
  }
  return value;
}

/**
 * Per-channel values: a Float32Array, Float64Array or number[] of exactly `length` values;
 * `count` names where that length comes from in the message.
 */
export function checkChannelValues(
  v: unknown,
  length: number,
  where: string,
  name: string,
  count = "numFeatures",
): ArrayLike<number> {
  const ok =
    isTyped(v, "Float32Array") ||
    isTyped(v, "Float64Array") ||
    (Array.isArray(v) && v.every((e) => typeof e === "number"));
  if (!ok) {
    throw new TypeError(
      `${where}: ${name} must be a Float32Array, Float64Array or number[], got ${typeName(v)}`,
    );
  }
  const values = v as ArrayLike<number>;
  if (values.length !== length) {
    throw new RangeError(
      `${where}: ${name} must have ${count} = ${length} values, got ${values.length}`,
    );
  }
  return values;
}
