// Generated from sdk/typescript/src/sse.ts (keymaster-client 0.1.0) by sdk/typescript/scripts/demo-assets.mjs; do not edit.
// An incremental parser for `text/event-stream` (WHATWG server-sent events), fed with the
// chunks of a response body as they arrive. It only splits the stream into messages; turning a
// message's data into an event is the event iterator's job.
export class SseParser {
    line = [];
    afterCr = false;
    started = false;
    data = [];
    event = "";
    decoder = new TextDecoder();
    lastId = null;
    /** Feeds one chunk; returns the messages it completed, in order. */
    push(chunk) {
        const out = [];
        let bytes = chunk;
        if (!this.started && bytes.length > 0) {
            this.started = true;
            if (bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf)
                bytes = bytes.subarray(3);
        }
        for (const byte of bytes) {
            const afterCr = this.afterCr;
            this.afterCr = false;
            if (afterCr && byte === 0x0a)
                continue;
            if (byte === 0x0a || byte === 0x0d) {
                this.afterCr = byte === 0x0d;
                const line = this.decoder.decode(new Uint8Array(this.line));
                this.line = [];
                const message = this.lineDone(line);
                if (message)
                    out.push(message);
            }
            else {
                this.line.push(byte);
            }
        }
        return out;
    }
    lineDone(line) {
        if (line === "") {
            const event = this.event;
            const data = this.data;
            this.event = "";
            this.data = [];
            if (data.length === 0)
                return null;
            return { id: this.lastId, event: event || "message", data: data.join("\n") };
        }
        if (line.startsWith(":"))
            return null; // a comment, such as a keep-alive
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? "" : line.slice(colon + 1);
        if (value.startsWith(" "))
            value = value.slice(1);
        if (field === "event")
            this.event = value;
        else if (field === "data")
            this.data.push(value);
        else if (field === "id" && !value.includes("\0"))
            this.lastId = value || null;
        return null;
    }
}
