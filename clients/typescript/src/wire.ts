// The encoding of a tool call's input and the decoding of its output, each
// in one function: the wire format of turnbox.v1.ToolRequest.arguments,
// ToolResponse.output/content and ToolProgress.output/data lives only in
// this file.

import type { JsonObject } from "@bufbuild/protobuf";
import type { ToolProgress, ToolResponse } from "./gen/turnbox/v1/sandbox_pb.js";

const utf8 = new TextEncoder();
const text = new TextDecoder("utf-8", { fatal: false });

/**
 * encodeToolInput turns a tool's arguments (a JSON object such as
 * `{command: "ls"}`) into ToolRequest.arguments, a JSON object on the wire.
 */
export function encodeToolInput(input: Record<string, unknown>): JsonObject {
  if (input === null || typeof input !== "object" || Array.isArray(input)) {
    throw new TypeError("tool input must be a JSON object");
  }
  // A round trip through JSON drops what JSON cannot carry (undefined,
  // functions) as JSON.stringify does.
  return JSON.parse(JSON.stringify(input)) as JsonObject;
}

/**
 * ToolOutput is a tool's output: its bytes and the same decoded as UTF-8
 * (invalid sequences replaced).
 */
export interface ToolOutput {
  text: string;
  bytes: Uint8Array;
}

/**
 * decodeToolOutput reads a ToolResponse's output: the output field when
 * it is text, the content field (bytes) when it is not valid UTF-8.
 */
export function decodeToolOutput(resp: ToolResponse): ToolOutput {
  if (resp.output !== "") return { text: resp.output, bytes: utf8.encode(resp.output) };
  return { text: text.decode(resp.content), bytes: resp.content };
}

/** StreamDecoder is the part of TextDecoder decodeProgress uses. */
export interface StreamDecoder {
  decode(input: Uint8Array, options?: { stream?: boolean }): string;
}

/**
 * decodeProgress reads one progress chunk. The server sends whole UTF-8
 * characters as output; a chunk that is not valid UTF-8 comes as data and
 * is decoded with decoder (one per stream), which keeps a split character
 * for the next chunk.
 */
export function decodeProgress(p: ToolProgress, decoder: StreamDecoder): ToolOutput {
  if (p.output !== "") return { text: p.output, bytes: utf8.encode(p.output) };
  return { text: decoder.decode(p.data, { stream: true }), bytes: p.data };
}
