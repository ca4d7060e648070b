/**
 * A minimal protocol-buffers writer: just enough of the wire format (varints, 32-bit floats,
 * length-delimited fields) to encode the ONNX ModelProto of `onnx-graph.ts` without a
 * dependency. Messages are built inside-out: a nested message is a finished `Uint8Array`
 * written as a length-delimited field.
 */

/** Wire types of the encoding. */
const VARINT = 0;
const LEN = 2;
const I32 = 5;

export class ProtoWriter {
  #bytes: number[] = [];

  #varint(value: number | bigint): void {
    // int64 fields take negative values as their 64-bit two's complement (10 bytes).
    let v = BigInt.asUintN(64, BigInt(value));
    while (v >= 0x80n) {
      this.#bytes.push(Number(v & 0x7fn) | 0x80);
      v >>= 7n;
    }
    this.#bytes.push(Number(v));
  }

  #tag(field: number, wireType: number): void {
    this.#varint((field << 3) | wireType);
  }

  /** An int32, int64 or enum field. */
  int(field: number, value: number): this {
    this.#tag(field, VARINT);
    this.#varint(value);
    return this;
  }

  /** A `float` field (little-endian IEEE single). */
  float(field: number, value: number): this {
    this.#tag(field, I32);
    const b = new Uint8Array(new Float32Array([value]).buffer);
    this.#bytes.push(...b);
    return this;
  }

  /** A `bytes` field or an embedded message. */
  bytes(field: number, value: Uint8Array): this {
    this.#tag(field, LEN);
    this.#varint(value.length);
    for (const b of value) this.#bytes.push(b);
    return this;
  }

  string(field: number, value: string): this {
    return this.bytes(field, new TextEncoder().encode(value));
  }

  /** A packed `repeated int64` field. */
  packedInts(field: number, values: readonly number[]): this {
    const inner = new ProtoWriter();
    for (const v of values) inner.#varint(v);
    return this.bytes(field, inner.finish());
  }

  finish(): Uint8Array {
    return Uint8Array.from(this.#bytes);
  }
}
