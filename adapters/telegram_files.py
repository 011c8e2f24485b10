"""Telegram's files as the core's `Attachment`s, and their download.

A message carries at most one file: a ``document``, a ``photo`` (Telegram sends
several sizes of the same JPEG: the largest is taken), a ``voice`` note (OGG/Opus,
named ``.oga`` by Telegram: called ``voice.ogg`` here, the name transcription
endpoints accept), an ``audio`` file or a round ``video_note``. Stickers, videos,
animations and the rest stay "text only".

The download is ``getFile`` (the Bot API refuses files over 20 MB there: "file is
too big") and then ``GET {telegram.file_url}<token>/<file_path>``, always on the
configured Bot API's host (`bridge.config.telegram_file_url`), streamed. A local
Bot API server started with ``--local`` answers an absolute path on its own disk
instead, which is read from there.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from pathlib import Path

import httpx
from telegram import Bot, Message
from telegram.error import InvalidToken, TelegramError

from bridge.attachments import Attachment, AttachmentKind
from bridge.errors import AttachmentError

log = logging.getLogger("adapters.telegram")

#: Bytes read from the network (or a local server's disk) at a time.
CHUNK = 64 * 1024
DOWNLOAD_FAILED = "Sorry, I could not download {name} from Telegram. Please send it again."
TOO_BIG_FOR_BOTS = "Sorry, {name} is too big: Telegram lets bots download files up to 20 MB."


def attachments(message: Message) -> list[Attachment]:
    """The file of ``message`` as an `Attachment` (an empty list when it has none we read)."""
    if message.document is not None:
        doc = message.document
        return [
            Attachment(
                AttachmentKind.DOCUMENT,
                doc.file_name or "file",
                doc.mime_type,
                doc.file_size,
                doc.file_id,
            )
        ]
    if message.photo:
        largest = max(message.photo, key=lambda p: (p.width * p.height, p.file_size or 0))
        # Telegram re-encodes every photo as JPEG.
        return [
            Attachment(
                AttachmentKind.IMAGE, "photo.jpg", "image/jpeg", largest.file_size, largest.file_id
            )
        ]
    if message.voice is not None:
        v = message.voice
        return [Attachment(AttachmentKind.VOICE, "voice.ogg", "audio/ogg", v.file_size, v.file_id)]
    if message.audio is not None:
        a = message.audio
        name = a.file_name or "audio.mp3"
        return [Attachment(AttachmentKind.AUDIO, name, a.mime_type, a.file_size, a.file_id)]
    if message.video_note is not None:
        n = message.video_note
        return [
            Attachment(AttachmentKind.VIDEO, "video_note.mp4", "video/mp4", n.file_size, n.file_id)
        ]
    return []


async def download(
    bot: Bot, client: httpx.AsyncClient, attachment: Attachment
) -> AsyncGenerator[bytes, None]:
    """The bytes of ``attachment``, chunk by chunk. Raises `AttachmentError`; the
    token (part of the URL) appears in no error."""
    name = attachment.name
    try:
        file = await bot.get_file(attachment.file_id)
    except TelegramError as exc:
        too_big = "too big" in exc.message.lower()
        # PTB's InvalidToken quotes the token: never let it into a log line.
        reason = "Unauthorized" if isinstance(exc, InvalidToken) else exc.message
        raise AttachmentError(
            "too_large" if too_big else "unavailable",
            f"getFile failed: {reason}",
            user_message=(TOO_BIG_FOR_BOTS if too_big else DOWNLOAD_FAILED).format(name=name),
        ) from None
    where = file.file_path or ""
    if where and not where.startswith(("http://", "https://")):
        async for chunk in _local(Path(where), name):
            yield chunk
        return
    try:
        async with client.stream("GET", where) as response:
            if response.status_code != 200:
                raise AttachmentError(
                    "unavailable",
                    f"file download answered HTTP {response.status_code}",
                    user_message=DOWNLOAD_FAILED.format(name=name),
                )
            async for chunk in response.aiter_bytes(CHUNK):
                yield chunk
    except httpx.HTTPError as exc:
        # httpx's message may quote the URL, which holds the token: the type only.
        raise AttachmentError(
            "unavailable",
            f"file download failed: {type(exc).__name__}",
            user_message=DOWNLOAD_FAILED.format(name=name),
        ) from None


async def _local(path: Path, name: str) -> AsyncGenerator[bytes, None]:
    try:
        f = await asyncio.to_thread(path.open, "rb")
    except OSError as exc:
        raise AttachmentError(
            "unavailable",
            f"the local Bot API server's file is not readable: {exc.strerror}",
            user_message=DOWNLOAD_FAILED.format(name=name),
        ) from None
    try:
        while chunk := await asyncio.to_thread(f.read, CHUNK):
            yield chunk
    finally:
        f.close()
