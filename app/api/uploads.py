"""Reading an uploaded CSV file: a ``text/csv`` body or the multipart field ``file``, UTF-8
(with or without a byte-order mark), as spreadsheets export it."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.datastructures import UploadFile

from app.errors import InvalidInput

_CSV_TYPES = ("text/csv", "text/plain", "application/csv", "application/vnd.ms-excel")


async def csv_text(request: Request[Any, Any, Any]) -> str:
    content_type = request.headers.get("content-type", "")
    media_type = content_type.partition(";")[0].strip().lower()
    if media_type == "multipart/form-data":
        form = await request.form()
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidInput("send the CSV as the multipart field 'file'", field="file")
        raw = await upload.read()
    elif media_type in _CSV_TYPES:
        raw = await request.body()
    else:
        raise InvalidInput(
            "send the CSV as a text/csv body or as multipart field 'file', "
            f"not {media_type or 'no content type'}",
            field="Content-Type",
        )
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"not UTF-8 text (byte {exc.start}); export the CSV as UTF-8", field="file"
        ) from exc
