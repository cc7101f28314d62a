#!/usr/bin/env python3
"""Drive `turnbox serve` from Python with the standard library only.

The Connect protocol's JSON form: every call is an HTTP POST of a JSON
object to /turnbox.v1.SandboxService/<Method> with
Content-Type: application/json; the answer is JSON, an error is JSON
{"code": ..., "message": ...} with a non-200 status. Field names are the
proto's in lowerCamelCase (see remote/proto/turnbox/v1/sandbox.proto).

    TURNBOX_URL=http://127.0.0.1:8080 TURNBOX_TOKEN=... python3 example.py

It creates a session, runs commands, snapshots the turn, changes a file,
rolls back, checks the file is as it was, and destroys the session.
"""

import base64
import json
import os
import sys
import urllib.error
import urllib.request
import uuid


class TurnboxError(Exception):
    """A failed call: code is the Connect code ("not_found", ...)."""

    def __init__(self, method, code, message):
        super().__init__(f"{method}: {code}: {message}")
        self.code = code


class Turnbox:
    """A minimal client of SandboxService over Connect's JSON protocol."""

    def __init__(self, url, token=None, timeout=60):
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def call(self, method, body):
        """POSTs body to SandboxService/method and returns the answer."""
        req = urllib.request.Request(
            f"{self.url}/turnbox.v1.SandboxService/{method}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.load(resp)
        except urllib.error.HTTPError as e:
            try:
                err = json.load(e)
            except ValueError:
                err = {"code": str(e.code), "message": e.reason}
            raise TurnboxError(method, err.get("code"), err.get("message")) from None

    def exec(self, session_id, command):
        """Runs a shell command (the bash tool) and returns its response."""
        request = {
            "toolCallId": f"py-{uuid.uuid4()}",
            "toolName": "bash",
            **encode_tool_input({"command": command}),
        }
        resp = self.call("ExecuteTool", {"sessionId": session_id, "request": request})["response"]
        resp["output"] = decode_tool_output(resp)
        return resp


def encode_tool_input(args):
    """A tool's JSON arguments as ToolRequest fields: a JSON object."""
    return {"arguments": args}


def decode_tool_output(resp):
    """A ToolResponse's output as text: "output" when it is UTF-8 text,
    else "content" (bytes, base64); neither when the output is empty."""
    if "output" in resp:
        return resp["output"]
    return base64.b64decode(resp.get("content", "")).decode("utf-8", "replace")


def main():
    url = os.environ.get("TURNBOX_URL", "http://127.0.0.1:8080")
    tb = Turnbox(url, os.environ.get("TURNBOX_TOKEN"))

    sid = tb.call("CreateSession", {"config": {}})["session"]["id"]
    print(f"created session {sid}")
    try:
        out = tb.exec(sid, "echo version-1 > state.txt; cat state.txt")
        print(f"exec: exit {out.get('exitCode', 0)}, output {out['output']!r}")
        assert out["output"] == "version-1\n", out

        snap = tb.call("TurnComplete", {"sessionId": sid, "label": "first turn"})["snapshot"]
        print(f"snapshot {snap['id']} (turn {snap['turn']})")

        tb.exec(sid, "echo version-2 > state.txt")
        assert tb.exec(sid, "cat state.txt")["output"] == "version-2\n"

        tb.call("Rollback", {"sessionId": sid, "snapshotId": snap["id"]})
        out = tb.exec(sid, "cat state.txt")["output"]
        print(f"after rollback: {out!r}")
        assert out == "version-1\n", out

        failed = tb.exec(sid, "exit 7")
        assert failed.get("exitCode") == 7 and failed.get("isError"), failed
    finally:
        tb.call("DestroySession", {"sessionId": sid})
        print(f"destroyed session {sid}")

    try:
        tb.call("GetSession", {"sessionId": sid})
    except TurnboxError as e:
        print(f"the destroyed session is gone: {e.code}")
        assert e.code == "not_found", e
    else:
        raise AssertionError("GetSession found a destroyed session")
    print("python example: ok")


if __name__ == "__main__":
    try:
        main()
    except (TurnboxError, AssertionError, OSError) as e:
        print(f"python example: FAILED: {e!r}", file=sys.stderr)
        sys.exit(1)
