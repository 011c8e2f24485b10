"""Voice notes and audio become text through an OpenAI-compatible transcription
endpoint (``[transcription]``): ``POST {base_url}/audio/transcriptions``, multipart
``file`` and ``model``, answer ``{"text": ...}``. OpenAI, Groq and the local Whisper
servers speak it.

The file is streamed from its temp file (`bridge.files`), never read into memory
first. Telegram names voice notes ``.oga`` (OGG/Opus); they are uploaded as
``.ogg``, which every such endpoint accepts. Errors become `AttachmentError`
with a friendly text, as the agents' errors do; the transcript is never logged.

Example::

    transcriber = Transcriber(config.transcription, client)
    text = await transcriber.transcribe(path, attachment)
"""

from __future__ import annotations

import logging
from pathlib import Path, PurePath

import httpx

from bridge.attachments import Attachment
from bridge.config import TranscriptionConfig
from bridge.errors import AttachmentError

log = logging.getLogger("bridge.transcription")

UNAUTHORIZED = (
    "Sorry, I can't listen to voice messages right now: the bridge is not authorized "
    "to use its transcription service. An administrator needs to check its API key."
)
TOO_LARGE = "Sorry, that recording is too long for me to listen to. Please send a shorter one."
RATE_LIMITED = (
    "I can't listen right now: too many recordings at once. Please try again in a minute."
)
UNAVAILABLE = "I can't listen to recordings right now. Please try again in a few minutes."
BAD_REPLY = "Sorry, I could not make out that recording. Please try again or write instead."


def upload_name(attachment: Attachment) -> str:
    """The file name sent to the endpoint: ``.oga`` becomes ``.ogg``."""
    path = PurePath(attachment.name)
    if path.suffix.lower() == ".oga":
        return str(path.with_suffix(".ogg"))
    return attachment.name if path.suffix else f"{attachment.name}.ogg"


class Transcriber:
    """One configured transcription endpoint, on the shared HTTP client."""

    def __init__(self, config: TranscriptionConfig, client: httpx.AsyncClient) -> None:
        self.config = config
        self._client = client
        self._url = f"{config.base_url.rstrip('/')}/audio/transcriptions"

    async def transcribe(self, path: Path, attachment: Attachment) -> str:
        """What the recording at ``path`` says. Raises `AttachmentError`."""
        headers = {}
        if self.config.api_key is not None:
            headers["Authorization"] = f"Bearer {self.config.api_key.get_secret_value()}"
        mime = attachment.mime_type or "application/octet-stream"
        if mime == "audio/oga":
            mime = "audio/ogg"
        try:
            with path.open("rb") as f:
                response = await self._client.post(
                    self._url,
                    headers=headers,
                    data={"model": self.config.model},
                    files={"file": (upload_name(attachment), f, mime)},
                    timeout=self.config.timeout,
                )
        except httpx.TimeoutException as exc:
            raise _error("timeout", f"no answer in {self.config.timeout:g}s", UNAVAILABLE) from exc
        except httpx.HTTPError as exc:
            raise _error("unavailable", type(exc).__name__, UNAVAILABLE) from exc
        status = response.status_code
        if status in (401, 403):
            raise _error("unauthorized", f"HTTP {status}", UNAUTHORIZED)
        if status == 413:
            raise _error("too_large", "HTTP 413", TOO_LARGE)
        if status == 429:
            raise _error("rate_limited", "HTTP 429", RATE_LIMITED)
        if status >= 500:
            raise _error("unavailable", f"HTTP {status}", UNAVAILABLE)
        if status != 200:
            raise _error("bad_reply", f"HTTP {status}", BAD_REPLY)
        try:
            body = response.json()
        except ValueError as exc:
            raise _error("bad_reply", "not JSON", BAD_REPLY) from exc
        text = body.get("text") if isinstance(body, dict) else None
        if not isinstance(text, str):
            raise _error("bad_reply", "no text in the answer", BAD_REPLY)
        log.debug("transcribed %s: %d characters", attachment.name, len(text))
        return text


def _error(kind: str, detail: str, user_message: str) -> AttachmentError:
    return AttachmentError(
        f"transcription_{kind}", f"transcription: {detail}", user_message=user_message
    )
