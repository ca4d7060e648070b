/**
 * Builds small ONNX models (ModelProto bytes) for the peer tests: one graph of float32 tensors
 * with constant initializers, default-domain operators, and the encoder below. Field numbers are
 * those of onnx/onnx.proto (IR version 8, which opset 15 belongs to).
 */
import { ProtoWriter } from "./protobuf.js";

/** A constant float32 tensor of the graph. */
export interface Initializer {
  name: string;
  dims: readonly number[];
  data: ArrayLike<number>;
}

export type Attribute = { float: number } | { int: number } | { ints: readonly number[] };

export interface OnnxNode {
  op: string;
  inputs: readonly string[];
  outputs: readonly string[];
  attributes?: Record<string, Attribute>;
}

export interface OnnxGraph {
  nodes: readonly OnnxNode[];
  /** Graph inputs fed at run time, with their shapes. */
  inputs: readonly { name: string; dims: readonly number[] }[];
  /** Graph outputs; ORT infers their shapes. */
  outputs: readonly string[];
  initializers?: readonly Initializer[];
  /** Default 15. */
  opset?: number;
}

/** onnx.proto's TensorProto.DataType.FLOAT. */
const FLOAT = 1;
/** AttributeProto.AttributeType: FLOAT, INT, INTS. */
const ATTR_FLOAT = 1;
const ATTR_INT = 2;
const ATTR_INTS = 7;

function tensor(init: Initializer): Uint8Array {
  const raw = new Uint8Array(Float32Array.from(init.data).buffer); // little-endian, as ONNX wants
  return new ProtoWriter()
    .packedInts(1, init.dims) // dims
    .int(2, FLOAT) // data_type
    .string(8, init.name) // name
    .bytes(9, raw) // raw_data
    .finish();
}

function attribute(name: string, a: Attribute): Uint8Array {
  const w = new ProtoWriter().string(1, name);
  if ("float" in a) w.float(2, a.float).int(20, ATTR_FLOAT);
  else if ("int" in a) w.int(3, a.int).int(20, ATTR_INT);
  else w.packedInts(8, a.ints).int(20, ATTR_INTS);
  return w.finish();
}

function node(n: OnnxNode, index: number): Uint8Array {
  const w = new ProtoWriter();
  for (const i of n.inputs) w.string(1, i);
  for (const o of n.outputs) w.string(2, o);
  w.string(3, `${n.op}_${index}`).string(4, n.op);
  for (const [k, a] of Object.entries(n.attributes ?? {})) w.bytes(5, attribute(k, a));
  return w.finish();
}

/** ValueInfoProto of a float tensor; `dims` omitted = shape left to inference. */
function valueInfo(name: string, dims?: readonly number[]): Uint8Array {
  const tensorType = new ProtoWriter().int(1, FLOAT);
  if (dims) {
    const shape = new ProtoWriter();
    for (const d of dims) shape.bytes(1, new ProtoWriter().int(1, d).finish());
    tensorType.bytes(2, shape.finish());
  }
  const type = new ProtoWriter().bytes(1, tensorType.finish()).finish();
  return new ProtoWriter().string(1, name).bytes(2, type).finish();
}

/** The serialized ModelProto of `g`. */
export function encodeModel(g: OnnxGraph): Uint8Array {
  const graph = new ProtoWriter();
  g.nodes.forEach((n, i) => {
    graph.bytes(1, node(n, i));
  });
  graph.string(2, "peer_test");
  for (const init of g.initializers ?? []) graph.bytes(5, tensor(init));
  for (const i of g.inputs) graph.bytes(11, valueInfo(i.name, i.dims));
  for (const o of g.outputs) graph.bytes(12, valueInfo(o));
  const opset = new ProtoWriter()
    .string(1, "")
    .int(2, g.opset ?? 15)
    .finish();
  return new ProtoWriter()
    .int(1, 8) // ir_version
    .string(2, "wasm-batchnorm tests") // producer_name
    .bytes(7, graph.finish())
    .bytes(8, opset)
    .finish();
}
