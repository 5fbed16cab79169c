"""The API app and its client, as the API tests build them (the pages are the same app)."""

from tests.service.api.conftest import app, client, settings  # noqa: F401
