"""`FakeTranscription`: an OpenAI-compatible transcription server on 127.0.0.1.

``POST /v1/audio/transcriptions`` with a multipart body: a ``file`` part (its file
name, content type and bytes are recorded) and a ``model`` field. Both are checked
as OpenAI does: a missing part is 400; a file name without an audio extension
OpenAI accepts (``.oga`` is not one) is 400 "Invalid file format". A wrong bearer
key is 401. The answer is ``{"text": server.text}``; ``server.fail_next(status)``
scripts the next answers' statuses (429, 413, 500...).

Usage::

    async with FakeTranscription() as stt:
        config = {"transcription": {"base_url": stt.base_url, "api_key": stt.api_key}}
        stt.text = "what's the weather?"
        ...
        [call] = stt.calls
        call.filename, call.model, call.content
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import Self

from aiohttp import BodyPartReader, web

from tests.fakes.loopback import serve_loopback

FAKE_STT_KEY = "sk-fake-transcription-key-123"
#: The extensions OpenAI's endpoint accepts (its error message lists these).
ACCEPTED = ("flac", "m4a", "mp3", "mp4", "mpeg", "mpga", "oga", "ogg", "wav", "webm")


@dataclass(frozen=True)
class TranscriptionCall:
    filename: str
    content_type: str
    content: bytes
    model: str
    authorization: str


class FakeTranscription:
    def __init__(self, *, api_key: str = FAKE_STT_KEY) -> None:
        self.api_key = api_key
        self.text = "hello from a voice note"
        self.calls: list[TranscriptionCall] = []
        #: Extensions accepted; the default leaves out "oga", as Groq and some local
        #: Whisper servers do, so that a test sees the bridge upload ".ogg".
        self.accepted = tuple(e for e in ACCEPTED if e != "oga")
        self._failures: list[int] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_post("/v1/audio/transcriptions", self._transcribe)
        self._runner, port = await serve_loopback(app)
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def base_url(self) -> str:
        """The value for ``transcription.base_url``."""
        return f"{self.url}/v1"

    def fail_next(self, *statuses: int) -> None:
        self._failures.extend(statuses)

    async def _transcribe(self, request: web.Request) -> web.Response:
        authorization = request.headers.get("Authorization", "")
        if authorization != f"Bearer {self.api_key}":
            return _error(401, "Incorrect API key provided")
        if self._failures:
            status = self._failures.pop(0)
            return _error(status, f"scripted {status}")
        if not request.content_type.startswith("multipart/form-data"):
            return _error(400, "expected multipart/form-data")
        reader = await request.multipart()
        file: tuple[str, str, bytes] | None = None
        model = ""
        async for part in reader:
            if not isinstance(part, BodyPartReader):
                continue  # a nested multipart: not what the endpoint takes
            if part.name == "file":
                content = await part.read()
                file = (part.filename or "", part.headers.get("Content-Type", ""), bytes(content))
            elif part.name == "model":
                model = (await part.text()).strip()
        if file is None or not model:
            return _error(400, "file and model are required")
        filename, content_type, content = file
        extension = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
        if extension not in self.accepted:
            return _error(400, f"Invalid file format. Supported formats: {list(self.accepted)}")
        self.calls.append(TranscriptionCall(filename, content_type, content, model, authorization))
        return web.json_response({"text": self.text})


def _error(status: int, message: str) -> web.Response:
    body = {"error": {"message": message, "type": "invalid_request_error"}}
    return web.json_response(body, status=status)
