"""What the callback routes return: delivery attempts and the owner's signing secret."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from service.store.callbacks import CallbackRecord

CallbackState = Literal["waiting", "pending", "delivered", "failed", "skipped"]


class DeliveryAttemptPublic(BaseModel):
    attempt: int
    started_at: datetime
    duration_ms: float
    status_code: int | None = Field(description="The receiver's HTTP status; null when it did not answer.")
    error: str | None = Field(description="Why the attempt did not count as delivered; null on a 2xx.")


class DeliveryPublic(BaseModel):
    event_id: str = Field(description="The event's id, sent as `Gradwatch-Event-Id` on every attempt.")
    url: str
    events: list[str]
    state: CallbackState = Field(
        description="`waiting` for the run to end; `pending` (being sent or retried); `delivered`; `failed` "
        "(no 2xx within GRADWATCH_CALLBACK_RETRY_FOR_S); `skipped` (it ended in a status not in `events`)."
    )
    created_at: datetime
    triggered_at: datetime | None = Field(description="When the end was announced.")
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    last_error: str | None
    event: dict[str, Any] | None = Field(description="The body that is sent, fixed when the end was announced.")
    attempts: list[DeliveryAttemptPublic]

    @classmethod
    def from_record(cls, record: CallbackRecord) -> DeliveryPublic:
        return cls(
            event_id=record.id,
            url=record.url,
            events=record.events,
            state=record.state,  # type: ignore[arg-type]
            created_at=record.created_at,
            triggered_at=record.triggered_at,
            next_attempt_at=record.next_attempt_at,
            delivered_at=record.delivered_at,
            last_error=record.last_error,
            event=record.event,
            attempts=[DeliveryAttemptPublic(**attempt.__dict__) for attempt in record.history],
        )


class DeliveryList(BaseModel):
    items: list[DeliveryPublic]


class CallbackSecretPublic(BaseModel):
    owner: str
    secret: str = Field(
        description="HMAC-SHA256 key of your callbacks: `Gradwatch-Signature` is `v1=` + "
        'hex HMAC(secret, Gradwatch-Timestamp + "." + body).'
    )
