"""An incremental parser for ``text/event-stream`` (WHATWG server-sent events), fed with the
chunks of a response body as they arrive. It only splits the stream into messages; turning a
message's data into an event is the event iterator's job."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional


@dataclass(frozen=True)
class SseMessage:
    """One dispatched message: the last ``id`` seen so far, the ``event`` type, the ``data``."""

    id: Optional[str]
    event: str
    data: str


class SseParser:
    """Parser state between chunks."""

    def __init__(self) -> None:
        self._line = bytearray()
        self._after_cr = False
        self._started = False
        self._data: List[str] = []
        self._event = ""
        self.last_id: Optional[str] = None

    def push(self, chunk: bytes) -> List[SseMessage]:
        """Feeds one chunk; returns the messages it completed, in order. A message still open
        when the stream ends is dropped, as the format prescribes."""
        out: List[SseMessage] = []
        if not self._started and chunk:
            self._started = True
            if chunk.startswith(b"\xef\xbb\xbf"):
                chunk = chunk[3:]
        for byte in chunk:
            after_cr, self._after_cr = self._after_cr, False
            if after_cr and byte == 0x0A:
                continue
            if byte in (0x0A, 0x0D):
                self._after_cr = byte == 0x0D
                line = self._line.decode("utf-8", errors="replace")
                self._line.clear()
                message = self._line_done(line)
                if message is not None:
                    out.append(message)
            else:
                self._line.append(byte)
        return out

    def _line_done(self, line: str) -> Optional[SseMessage]:
        if not line:
            event, self._event = self._event, ""
            data, self._data = self._data, []
            if not data:
                return None
            return SseMessage(self.last_id, event or "message", "\n".join(data))
        if line.startswith(":"):
            return None  # a comment, such as a keep-alive
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "event":
            self._event = value
        elif field == "data":
            self._data.append(value)
        elif field == "id" and "\0" not in value:
            self.last_id = value or None
        return None
