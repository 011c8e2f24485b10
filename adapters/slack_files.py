"""Slack's ``files[]`` as the core's `Attachment`s, and their download.

A ``file_share`` message carries its files in ``files[]``: id, name, ``mimetype``,
``size``, ``url_private_download``. Images become image attachments, audio and
video (Slack's clips) spoken ones, anything else a document. Slack Connect events
may carry stubs instead (``{"id": ..., "file_access": "check_file_info"}``):
`describe` asks ``files.info`` for what they lack, in the message's turn.

The download always starts with ``files.info`` (scope ``files:read``): it resolves
stubs, and the URL it gives comes from the configured API, not from an event.
The bot token goes only to that URL on Slack's own domain (the API host or its
subdomains: ``files.slack.com`` beside ``slack.com``). Without a valid token Slack
does not answer 401: it redirects (302) to a sign-in page served with 200, so
redirects are not followed and an HTML body where the file is not HTML is refused.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from bridge.attachments import Attachment, AttachmentKind
from bridge.errors import AttachmentError

log = logging.getLogger("adapters.slack")

CHUNK = 64 * 1024
DOWNLOAD_FAILED = "Sorry, I could not download {name} from Slack. Please share it again."
NOT_ALLOWED = (
    "Sorry, I could not download {name}: the bridge's Slack app may not read files "
    "(an administrator needs to add the files:read scope and reinstall the app)."
)
#: A stub's name until files.info tells (it has none); said to the user if that fails.
STUB_NAME = "the shared file"


def attachments(event: Mapping[str, Any]) -> list[Attachment]:
    """The files of a message event (stubs included, to be described later)."""
    files = event.get("files")
    if not isinstance(files, list):
        return []
    found = (describe(item) for item in files if isinstance(item, Mapping))
    return [a for a in found if a is not None]


def describe(file: Mapping[str, Any]) -> Attachment | None:
    """One entry of ``files[]`` (or ``files.info``'s ``file``) as an `Attachment`."""
    file_id = file.get("id")
    if not isinstance(file_id, str) or not file_id:
        return None
    if file.get("file_access") == "check_file_info":
        return Attachment(AttachmentKind.DOCUMENT, STUB_NAME, None, None, file_id)
    name = file.get("name") or file.get("title") or STUB_NAME
    mime = file.get("mimetype") if isinstance(file.get("mimetype"), str) else None
    size = file.get("size")
    size = size if isinstance(size, int) and not isinstance(size, bool) else None
    major = (mime or "").split("/", 1)[0]
    kind = {
        "image": AttachmentKind.IMAGE,
        "audio": AttachmentKind.AUDIO,
        "video": AttachmentKind.VIDEO,
    }.get(major, AttachmentKind.DOCUMENT)
    return Attachment(kind, str(name), mime, size, file_id)


def is_stub(attachment: Attachment) -> bool:
    return attachment.mime_type is None and attachment.name == STUB_NAME


async def file_info(client: AsyncWebClient, attachment: Attachment) -> Mapping[str, Any]:
    """``files.info`` of the attachment; `AttachmentError` when Slack refuses it."""
    name = attachment.name
    try:
        response = await client.files_info(file=attachment.file_id)
    except SlackApiError as exc:
        error = str(exc.response.get("error", "unknown_error"))
        refused = error in ("missing_scope", "not_allowed_token_type", "no_permission")
        raise AttachmentError(
            "unavailable",
            f"files.info failed: {error}",
            user_message=(NOT_ALLOWED if refused else DOWNLOAD_FAILED).format(name=name),
        ) from None
    except (aiohttp.ClientError, TimeoutError, SlackClientError) as exc:
        raise AttachmentError(
            "unavailable",
            f"files.info failed: {type(exc).__name__}",
            user_message=DOWNLOAD_FAILED.format(name=name),
        ) from None
    file = response.get("file")
    if not isinstance(file, Mapping):
        raise AttachmentError(
            "unavailable", "files.info: no file", user_message=DOWNLOAD_FAILED.format(name=name)
        )
    return file


def on_slack(url: str, api_url: str) -> bool:
    """Whether ``url`` is on the configured Slack's domain: the API's host or a
    subdomain of its parent (``files.slack.com`` for ``slack.com``)."""
    try:
        host = (urlsplit(url).hostname or "").lower()
        api = (urlsplit(api_url).hostname or "").lower()
    except ValueError:  # "http://[::1" and the like
        return False
    return bool(host) and (host == api or host.endswith("." + api.removeprefix("www.")))


async def download(
    client: AsyncWebClient,
    session: aiohttp.ClientSession,
    *,
    token: str,
    api_url: str,
    attachment: Attachment,
) -> AsyncGenerator[bytes, None]:
    """The bytes of ``attachment``, chunk by chunk; `AttachmentError` otherwise."""
    file = await file_info(client, attachment)
    name = attachment.name if not is_stub(attachment) else str(file.get("name") or STUB_NAME)
    url = file.get("url_private_download") or file.get("url_private")
    if not isinstance(url, str) or not on_slack(url, api_url):
        raise AttachmentError(
            "unavailable",
            "no download URL on Slack's domain",
            user_message=DOWNLOAD_FAILED.format(name=name),
        )
    expected = str(file.get("mimetype") or "")
    try:
        async with session.get(
            url, headers={"Authorization": f"Bearer {token}"}, allow_redirects=False
        ) as response:
            content_type = response.headers.get("Content-Type", "")
            html = content_type.startswith("text/html") and not expected.startswith("text/html")
            if response.status != 200 or html:
                # 302 to the sign-in page, or that page itself: the token was not taken.
                raise AttachmentError(
                    "unavailable",
                    f"download answered {response.status} {content_type.split(';')[0]}",
                    user_message=NOT_ALLOWED.format(name=name),
                )
            async for chunk in response.content.iter_chunked(CHUNK):
                yield chunk
    except aiohttp.ClientError as exc:
        raise AttachmentError(
            "unavailable",
            f"download failed: {type(exc).__name__}",
            user_message=DOWNLOAD_FAILED.format(name=name),
        ) from None
