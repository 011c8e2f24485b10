"""A message's attachments made ready for the agent, inside the claimed turn.

`FileReader.prepare` takes each attachment of a message (`bridge.attachments`)
through the same steps, before the agent call (`bridge.turns`):

1. the per-user limits (files a minute, bytes a day) and the declared size
   against ``files.max_bytes``: a file over the cap is refused without a download;
2. the download, streamed from the adapter (`ChatAdapter.attachment_chunks`)
   into a private temp file (``mkstemp``: mode 0600) and stopped at the cap,
   so that nothing is held twice in memory; the file is deleted after use;
3. the conversion: a document becomes text (`bridge.documents`, in a thread),
   a voice note or audio a transcript (`bridge.transcription`), an image an
   image part for a backend that takes images (`AgentBackend.takes_images`).

Whatever fails becomes a friendly note for the user (`AttachmentError`), and the
rest of the message is still answered. File contents and transcripts are never
logged; names and sizes go to DEBUG only.

Example::

    reader = FileReader(config.files, transcriber=None)
    prepared = await reader.prepare(adapter, message, takes_images=False)
    prepared.agent_text(message.text)     # the user's text and the documents
    prepared.notes                        # what the user should be told
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import tempfile
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import TYPE_CHECKING

from bridge.attachments import (
    SPOKEN,
    AgentText,
    Attachment,
    AttachmentKind,
    Image,
    attachments_of,
)
from bridge.config import FilesConfig
from bridge.documents import Unreadable, to_text
from bridge.errors import AttachmentError, StorageError
from bridge.file_limits import FileLimits, FileUseLog
from bridge.metrics import Metrics
from bridge.model import InboxMessage, agent_input

if TYPE_CHECKING:
    from bridge.chat import ChatAdapter
    from bridge.transcription import Transcriber

log = logging.getLogger("bridge.files")

TOO_LARGE = "Sorry, {name} is too big for me ({size}; the limit is {limit})."
PER_MINUTE = (
    "You are sending files faster than I can take them (at most {limit} a minute): "
    "I skipped {name}. Please send it again in a minute."
)
PER_DAY = "You have reached today's limit for files ({limit}): I skipped {name}."
UNREADABLE = {
    "encrypted": "Sorry, I can't read {name}: it is protected with a password.",
    "no_text": (
        "Sorry, {name} has no text I can read (perhaps it is scanned). "
        "Please send a version with text, or paste the part you need."
    ),
    "unsupported": (
        "Sorry, I can't read {name}: I don't know that type of file. PDF, Word, Excel, "
        "PowerPoint, CSV, HTML, Markdown, JSON and text files work."
    ),
    "no_extra": (
        "Sorry, I can't read {name}: reading documents is not set up on this bridge "
        "(an administrator can install agent-bridge[files])."
    ),
    "damaged": "Sorry, I can't read {name}: the file seems to be damaged.",
    "empty": "{name} is empty, so the agent did not get it.",
}
NO_VOICE = (
    "Sorry, I can't listen to voice messages or audio here: voice is not set up. "
    "Please write your question."
)
SILENT = "I couldn't hear any words in that recording."
TEXT_ONLY_AGENT = "_(This agent reads text only: it got your caption, not the image.)_"
CUT = "_(Only the first {max_chars} characters of {name} reached the agent.)_"
#: Written into the agent's copy where a document's text was cut.
CUT_FOR_AGENT = "[The file's text is cut here: it is longer than {max_chars} characters.]"
UNSUPPORTED_KIND = "Sorry, I can't read {name}."
FAILED = "Sorry, something went wrong on my side while reading {name}."


def human_size(size: int) -> str:
    """``10485760`` -> ``"10 MB"`` (MB of 1024 * 1024 bytes, as Telegram counts)."""
    for unit, scale in (("MB", 1024 * 1024), ("KB", 1024)):
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{size} bytes"


@dataclass(slots=True)
class Prepared:
    """What a message's attachments became."""

    #: (file name, its text) for each document read, in the message's order.
    documents: list[tuple[str, str]] = field(default_factory=list)
    #: What voice notes and audio said, in order.
    transcripts: list[str] = field(default_factory=list)
    images: list[Image] = field(default_factory=list)
    #: Friendly texts for the user, shown before the answer.
    notes: list[str] = field(default_factory=list)
    #: What was heard, as shown to the user before the answer (``transcription.heard``).
    heard: list[str] = field(default_factory=list)

    def before_answer(self) -> str:
        """What the user sees before the agent's answer: what was heard, the notes."""
        return "\n\n".join([*self.heard, *self.notes])

    def question(self, text: str) -> str:
        """What the user asked: the typed text (a caption), then what was heard."""
        return "\n\n".join(part for part in (text.strip(), *self.transcripts) if part)

    def has_input(self, text: str) -> bool:
        """Whether anything is left for the agent."""
        return bool(self.question(text) or self.documents or self.images)

    def agent_text(self, text: str, context: object = None) -> AgentText:
        """The one text the agent receives: the documents, each delimited with its
        name, then the question (after any context, `bridge.model.agent_input`)."""
        question = self.question(text)
        blocks = [f'File "{name}":\n<<<\n{body}\n>>>' for name, body in self.documents]
        # A file sent in reply to someone keeps that message as context, caption or not.
        asked = agent_input(question, context).rstrip() if question or context else ""
        full = "\n\n".join([*blocks, asked] if asked else blocks)
        # The user's own words are loggable; documents and transcripts are not.
        shown = agent_input(text.strip(), context).rstrip() if text.strip() or context else ""
        return AgentText(full, shown, tuple(self.images))


@contextlib.asynccontextmanager
async def downloaded(
    chunks: AsyncGenerator[bytes, None], max_bytes: int, *, name: str, suffix: str = ""
) -> AsyncIterator[tuple[Path, int]]:
    """Write ``chunks`` to a private temp file (0600), stopping (and closing the
    download) as soon as more than ``max_bytes`` came; yield (path, size) and delete
    the file on the way out, whatever happens."""
    fd, name_on_disk = tempfile.mkstemp(prefix="agent-bridge-", suffix=suffix)
    path = Path(name_on_disk)
    try:
        size = 0
        with os.fdopen(fd, "wb") as out:
            async with contextlib.aclosing(chunks) as stream:
                async for chunk in stream:
                    size += len(chunk)
                    if size > max_bytes:
                        raise AttachmentError(
                            "too_large",
                            f"download stopped above {max_bytes} bytes",
                            user_message=TOO_LARGE.format(
                                name=name,
                                size=f"more than {human_size(max_bytes)}",
                                limit=human_size(max_bytes),
                            ),
                        )
                    out.write(chunk)
        yield path, size
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name_on_disk)


class FileReader:
    """Prepares a message's attachments for the agent (see the module docstring)."""

    def __init__(
        self,
        config: FilesConfig,
        transcriber: Transcriber | None = None,
        *,
        metrics: Metrics | None = None,
        uses: FileUseLog | None = None,
    ) -> None:
        self.config = config
        self.transcriber = transcriber
        #: Counted in ``uses`` (the store: across instances), else in this process.
        self.limits = FileLimits(config, uses)
        self.metrics = metrics if metrics is not None else Metrics()

    async def prepare(
        self, adapter: ChatAdapter, message: InboxMessage, *, takes_images: bool
    ) -> Prepared | None:
        """The message's attachments made ready; None when it has none."""
        attachments = attachments_of(message.meta)
        if not attachments:
            return None
        prepared = Prepared()
        for attachment in attachments:
            log.debug("message %d: %s", message.id, attachment.describe())
            platform = message.key.platform
            try:
                outcome = await self._one(adapter, message, attachment, prepared, takes_images)
            except AttachmentError as exc:
                # The name and the reason at DEBUG; the kind only above it.
                log.info("message %d: an attachment was not used (%s)", message.id, exc.kind)
                log.debug("message %d: %s: %s", message.id, attachment.name, exc)
                prepared.notes.append(exc.user_message)
                outcome = exc.kind
            except Exception as exc:
                # A bug, a full disk, an adapter not started: the rest is still answered.
                # The type only: an exception's text might quote what it was reading.
                log.error(
                    "message %d: reading an attachment failed (%s)",
                    message.id,
                    type(exc).__name__,
                )
                prepared.notes.append(FAILED.format(name=attachment.name))
                outcome = "internal"
            self.metrics.attachments.labels(platform, attachment.kind.value, outcome).inc()
        return prepared

    async def _one(
        self,
        adapter: ChatAdapter,
        message: InboxMessage,
        attachment: Attachment,
        prepared: Prepared,
        takes_images: bool,
    ) -> str:
        """Read one attachment into ``prepared``; return "read" (or "text_only": an
        image the agent cannot take). Raises `AttachmentError`."""
        attachment = await adapter.describe_attachment(message, attachment)
        name = attachment.name
        if attachment.kind in SPOKEN and self.transcriber is None:
            raise AttachmentError("no_transcription", "no [transcription]", user_message=NO_VOICE)
        if attachment.kind is AttachmentKind.IMAGE and not takes_images:
            if TEXT_ONLY_AGENT not in prepared.notes:
                prepared.notes.append(TEXT_ONLY_AGENT)
            return "text_only"
        user = f"{message.key.platform}:{message.sender}"
        cap = self.config.max_bytes
        if attachment.size is not None and attachment.size > cap:
            raise AttachmentError(
                "too_large",
                f"declared {attachment.size} bytes, over files.max_bytes",
                user_message=TOO_LARGE.format(
                    name=name, size=human_size(attachment.size), limit=human_size(cap)
                ),
            )
        try:
            refused = await self.limits.admit(user, attachment.size)
        except StorageError as exc:
            # The limits are a safeguard, not the answer: without the store, let it in.
            log.warning("message %d: cannot count the user's files: %s", message.id, exc)
            refused = None
        if refused == "per_minute":
            raise AttachmentError(
                "per_minute",
                "files.max_per_minute reached",
                user_message=PER_MINUTE.format(limit=self.config.max_per_minute, name=name),
            )
        if refused == "per_day":
            raise AttachmentError(
                "per_day",
                "files.max_bytes_per_day reached",
                user_message=PER_DAY.format(
                    limit=human_size(self.config.max_bytes_per_day), name=name
                ),
            )
        chunks = adapter.attachment_chunks(message, attachment)
        suffix = PurePath(name).suffix[:16]
        async with downloaded(chunks, cap, name=name, suffix=suffix) as (path, size):
            with contextlib.suppress(StorageError):  # as above: a safeguard
                await self.limits.downloaded(user, attachment.size, size)
            self.metrics.attachment_bytes.labels(message.key.platform).inc(size)
            log.debug("message %d: downloaded %s: %d bytes", message.id, name, size)
            if size == 0:
                raise AttachmentError(
                    "empty", "empty file", user_message=UNREADABLE["empty"].format(name=name)
                )
            if attachment.kind in SPOKEN:
                assert self.transcriber is not None
                text = (await self.transcriber.transcribe(path, attachment)).strip()
                if not text:
                    raise AttachmentError("silent", "empty transcript", user_message=SILENT)
                prepared.transcripts.append(text)
                heard = self.transcriber.config.heard
                if heard:
                    prepared.heard.append(heard.format(text=_one_line(text)))
                return "read"
            if attachment.kind is AttachmentKind.IMAGE:
                prepared.images.append(await _image(path, attachment))
                return "read"
            if attachment.kind is not AttachmentKind.DOCUMENT:
                raise AttachmentError(
                    "unsupported",
                    f"no reader for {attachment.kind}",
                    user_message=UNSUPPORTED_KIND.format(name=name),
                )
            try:
                text = await asyncio.to_thread(to_text, path, name, attachment.mime_type)
            except Unreadable as exc:
                template = UNREADABLE.get(exc.kind, UNREADABLE["damaged"])
                raise AttachmentError(
                    exc.kind, str(exc), user_message=template.format(name=name)
                ) from exc
        text = text.strip()
        if not text:
            raise AttachmentError(
                "no_text", "no text", user_message=UNREADABLE["no_text"].format(name=name)
            )
        limit = self.config.max_chars
        if len(text) > limit:
            text = f"{text[:limit].rstrip()}\n{CUT_FOR_AGENT.format(max_chars=limit)}"
            prepared.notes.append(CUT.format(max_chars=limit, name=name))
        prepared.documents.append((name, text))
        return "read"


#: Characters of a transcript shown back to the user (the agent gets all of it).
HEARD_CHARS = 300


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= HEARD_CHARS else line[: HEARD_CHARS - 1].rstrip() + "…"


async def _image(path: Path, attachment: Attachment) -> Image:
    data = await asyncio.to_thread(path.read_bytes)
    mime = attachment.mime_type or "image/jpeg"
    encoded = base64.b64encode(data).decode("ascii")
    return Image(attachment.name, mime, f"data:{mime};base64,{encoded}")
