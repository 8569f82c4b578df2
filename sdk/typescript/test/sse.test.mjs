// The event-stream parser on its own (it is internal, so this test imports the built module
// from dist/ and runs in the source tree only): the same cases as the Rust client's parser.
import { test } from "node:test";
import assert from "node:assert/strict";
import { SseParser } from "../dist/sse.js";

const enc = (text) => new TextEncoder().encode(text);
const msg = (id, event, data) => ({ id, event, data });

test("id, event and data", () => {
  const out = new SseParser().push(enc('id: evt_1\nevent: key.retrieved\ndata: {"a":1}\n\n'));
  assert.deepEqual(out, [msg("evt_1", "key.retrieved", '{"a":1}')]);
});

test("data lines are joined and the event type defaults to message", () => {
  assert.deepEqual(new SseParser().push(enc("data: one\ndata:two\ndata\n\n")), [msg(null, "message", "one\ntwo\n")]);
});

test("chunks split anywhere, every line ending, a byte-order mark", () => {
  const stream = new Uint8Array([
    0xef, 0xbb, 0xbf,
    ...enc(": keep-alive\r\nid: 1\r\ndata: a\r\n\r\nid: 2\rdata: b\r\rdata: c\n\n"),
  ]);
  const whole = new SseParser().push(stream);
  assert.deepEqual(whole, [msg("1", "message", "a"), msg("2", "message", "b"), msg("2", "message", "c")]);
  for (let split = 0; split <= stream.length; split++) {
    const p = new SseParser();
    const out = [...p.push(stream.subarray(0, split)), ...p.push(stream.subarray(split))];
    assert.deepEqual(out, whole, `split at ${split}`);
  }
  const p = new SseParser();
  assert.deepEqual([...stream].flatMap((b) => p.push(new Uint8Array([b]))), whole);
});

test("comments, retry, unknown fields and empty messages are ignored", () => {
  const out = new SseParser().push(enc(": hi\nretry: 1000\nfoo: bar\n\nevent: x\n\ndata: d\n\n"));
  assert.deepEqual(out, [msg(null, "message", "d")]);
});

test("an unfinished message is dropped; multi-byte text split across chunks survives", () => {
  const bytes = enc("data: grüße\n\ndata: half");
  const p = new SseParser();
  const out = [...p.push(bytes.subarray(0, 9)), ...p.push(bytes.subarray(9))];
  assert.deepEqual(out, [msg(null, "message", "grüße")]);
});

test("an empty id resets the last id", () => {
  const out = new SseParser().push(enc("id: 7\ndata: a\n\nid\ndata: b\n\n"));
  assert.deepEqual(out, [msg("7", "message", "a"), msg(null, "message", "b")]);
});
