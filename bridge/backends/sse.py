"""An incremental Server-Sent Events parser (the WHATWG HTML "event stream" rules).

Fed text in chunks of any size, it returns the events completed so far; the
chunk boundaries never change what comes out. Lines end in ``\\n``, ``\\r\\n`` or
``\\r`` (a ``\\r`` at the end of one chunk and a ``\\n`` at the start of the next
are one line end); a leading byte-order mark is dropped; ``:`` lines are
comments; ``data`` lines are joined with ``\\n``; an event is dispatched at a
blank line, and only when it has data. Unlike the spec, `close()` also returns
an event whose blank line never came (some servers end the body right after
the last ``data:`` line).

Example::

    parser = SseParser()
    for chunk in ("data: {\\"a\\"", ": 1}\\n\\nev", "ent: end\\ndata: x\\n\\n"):
        for event in parser.feed(chunk):
            print(event.event, event.data)   # message {"a": 1}, then end x
    parser.close()                           # [] (nothing left over)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One dispatched event. ``event`` is ``"message"`` when the stream named none."""

    data: str
    event: str = "message"
    id: str = ""

    def json(self) -> Any:
        """``data`` as JSON; `ValueError` when it is not."""
        return json.loads(self.data)


class SseParser:
    """Turns chunks of an event stream into `SseEvent`s (see the module docstring)."""

    def __init__(self) -> None:
        self._buffer = ""
        self._started = False
        self._skip_lf = False
        self._data: list[str] = []
        self._event = ""
        self._last_id = ""

    def feed(self, chunk: str) -> list[SseEvent]:
        """The events that ``chunk`` completes, in order."""
        if not self._started and chunk:
            self._started = True
            chunk = chunk.removeprefix("\ufeff")
        if self._skip_lf and chunk:
            self._skip_lf = False
            if chunk.startswith("\n"):
                chunk = chunk[1:]
        self._buffer += chunk
        events: list[SseEvent] = []
        while True:
            cut = _line_end(self._buffer)
            if cut is None:
                break
            line = self._buffer[:cut]
            end = self._buffer[cut]
            rest = self._buffer[cut + 1 :]
            if end == "\r":
                if rest.startswith("\n"):
                    rest = rest[1:]
                elif not rest:
                    # The \n of a \r\n may come in the next chunk.
                    self._skip_lf = True
            self._buffer = rest
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    def close(self) -> list[SseEvent]:
        """The end of the stream: the last event, if its blank line never came."""
        events = self.feed("\n") if self._buffer else []
        if self._data:
            events.extend(e for e in [self._dispatch()] if e is not None)
        return events

    def _line(self, line: str) -> SseEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._last_id = value
        # "retry" and unknown fields: nothing the bridge uses.
        return None

    def _dispatch(self) -> SseEvent | None:
        data, event = self._data, self._event
        self._data, self._event = [], ""
        if not data:
            return None
        return SseEvent(data="\n".join(data), event=event or "message", id=self._last_id)


def _line_end(text: str) -> int | None:
    lf, cr = text.find("\n"), text.find("\r")
    ends = [i for i in (lf, cr) if i >= 0]
    return min(ends) if ends else None
