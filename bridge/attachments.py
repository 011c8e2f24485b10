"""Files, voice notes and images that come with a message: the model adapters fill
and the port that fetches them.

An adapter describes each attachment of a message as an `Attachment` (kind, name,
MIME type, size, the platform's file id) and puts them in the message's
``meta[ATTACHMENTS]``, which the store keeps: a message resumed after a crash still
knows its files. Nothing is downloaded when the message arrives; the turn
(`bridge.turns`) fetches and converts them inside the claimed work, through
`ChatAdapter.attachment_chunks`, so that a crash repeats the download, never the
user's message.

Example::

    meta = {"chat_id": 42, ATTACHMENTS: [Attachment(
        AttachmentKind.DOCUMENT, "report.pdf", "application/pdf", 51234, "BQAC..."
    ).to_meta()]}
    attachments_of(meta)   # [Attachment(kind=<AttachmentKind.DOCUMENT: 'document'>, ...)]
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: The key of ``IncomingMessage.meta`` holding the attachments (a list of dicts).
ATTACHMENTS = "attachments"


class AttachmentKind(enum.StrEnum):
    DOCUMENT = "document"  # a file: converted to text when it is a document
    IMAGE = "image"  # a photo: an image part where the agent takes images
    VOICE = "voice"  # a voice note: transcribed
    AUDIO = "audio"  # an audio file: transcribed
    VIDEO = "video"  # a round video note: its sound is transcribed


#: Kinds whose sound becomes a transcript.
SPOKEN = frozenset({AttachmentKind.VOICE, AttachmentKind.AUDIO, AttachmentKind.VIDEO})


@dataclass(frozen=True, slots=True)
class Attachment:
    """One file of a message, as the platform described it (nothing downloaded).

    ``size`` is the platform's word (None when it gave none): a file declared over
    ``files.max_bytes`` is refused before any download, and the download itself
    stops at the cap whatever was declared. ``file_id`` is what the adapter needs to
    fetch it (Telegram's file_id; Slack's file id).
    """

    kind: AttachmentKind
    name: str
    mime_type: str | None
    size: int | None
    file_id: str

    def to_meta(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "name": self.name,
            "mime_type": self.mime_type,
            "size": self.size,
            "file_id": self.file_id,
        }

    @classmethod
    def from_meta(cls, value: object) -> Attachment | None:
        """The attachment a ``to_meta()`` dict describes; None for anything else."""
        if not isinstance(value, Mapping):
            return None
        try:
            kind = AttachmentKind(str(value.get("kind")))
        except ValueError:
            return None
        size = value.get("size")
        mime = value.get("mime_type")
        return cls(
            kind=kind,
            name=str(value.get("name") or "file"),
            mime_type=mime if isinstance(mime, str) else None,
            size=size if isinstance(size, int) and not isinstance(size, bool) else None,
            file_id=str(value.get("file_id") or ""),
        )

    def describe(self) -> str:
        """Name and size, for DEBUG logs (never the content)."""
        size = "?" if self.size is None else str(self.size)
        return f"{self.kind.value} {self.name!r} ({self.mime_type or 'no type'}, {size} bytes)"


def attachments_of(meta: Mapping[str, Any]) -> list[Attachment]:
    """The attachments an adapter put in ``meta`` (none when it put none)."""
    raw = meta.get(ATTACHMENTS)
    if not isinstance(raw, list):
        return []
    found = (Attachment.from_meta(item) for item in raw)
    return [a for a in found if a is not None]


@dataclass(frozen=True, slots=True)
class Image:
    """An image for a backend that takes images (`AgentBackend.takes_images`): a
    ``data:`` URL of the downloaded file, capped by ``files.max_bytes``."""

    name: str
    mime_type: str
    data_url: str = field(repr=False)


class AgentText(str):
    """The text sent to the agent for a message with attachments (`bridge.files`).

    It is the message, a plain `str` to every backend; a backend that takes images
    finds them in ``images``. Its repr, which the backends' DEBUG log prints, shows
    only the user's part (``shown``): the documents' text and the transcripts in it
    are never logged, at any level, and neither are the images.
    """

    shown: str
    images: tuple[Image, ...]

    def __new__(cls, text: str, shown: str, images: tuple[Image, ...] = ()) -> AgentText:
        value = super().__new__(cls, text)
        value.shown = shown
        value.images = images
        return value

    def __repr__(self) -> str:
        hidden = len(self) - len(self.shown)
        images = f", {len(self.images)} image(s)" if self.images else ""
        return f"{self.shown!r} + <{hidden} characters from attachments{images}, not logged>"


def images_of(message: str) -> tuple[Image, ...]:
    """The images that came with ``message`` (none for a plain `str`)."""
    return message.images if isinstance(message, AgentText) else ()
