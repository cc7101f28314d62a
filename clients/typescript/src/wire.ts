// The encoding of a tool call's input and the decoding of its output, each
// in one function, so that a change of the wire format of
// turnbox.v1.ToolRequest.input and ToolResponse.content touches only
// this file.

import type { ToolResponse } from "./gen/turnbox/v1/sandbox_pb.js";

const utf8 = new TextEncoder();
const text = new TextDecoder("utf-8", { fatal: false });

/**
 * encodeToolInput turns a tool's arguments (a JSON object such as
 * `{command: "ls"}`) into ToolRequest.input: today the JSON text as bytes.
 */
export function encodeToolInput(input: Record<string, unknown>): Uint8Array {
  if (input === null || typeof input !== "object" || Array.isArray(input)) {
    throw new TypeError("tool input must be a JSON object");
  }
  return utf8.encode(JSON.stringify(input));
}

/**
 * ToolOutput is a tool's output: its bytes and the same decoded as UTF-8
 * (invalid sequences replaced).
 */
export interface ToolOutput {
  text: string;
  bytes: Uint8Array;
}

/** decodeToolOutput reads a ToolResponse's output (today: content, bytes). */
export function decodeToolOutput(resp: ToolResponse): ToolOutput {
  return { text: text.decode(resp.content), bytes: resp.content };
}
