"""Log set-up. Structured JSON logs in production arrive with the operations issue."""

from __future__ import annotations

import logging
import re

from app.config import Settings

# Integration keys may come in the query string (`?key=…`, for senders that cannot set a header);
# the access log prints request lines, so they are masked there.
SECRET_IN_QUERY = re.compile(r"([?&](?:key|token|routing_key)=)[^&\s\"]+", re.IGNORECASE)


class RedactQuerySecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                SECRET_IN_QUERY.sub(r"\1[redacted]", a) if isinstance(a, str) else a
                for a in record.args
            )
        if isinstance(record.msg, str) and "=" in record.msg:
            record.msg = SECRET_IN_QUERY.sub(r"\1[redacted]", record.msg)
        return True


def redact_access_log() -> None:
    """Mask keys in the access log of uvicorn (and of gunicorn with uvicorn workers). Idempotent."""
    for name in ("uvicorn.access", "gunicorn.access"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactQuerySecrets) for f in logger.filters):
            logger.addFilter(RedactQuerySecrets())


def configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("app").setLevel(settings.log_level)
