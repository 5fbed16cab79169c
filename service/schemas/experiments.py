"""What the API returns about experiments."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:  # schemas stay importable without the store
    from service.store.records import ExperimentRecord
    from service.store.resume import AttemptRecord

Status = Literal["queued", "running", "succeeded", "failed", "diverged", "cancelled", "timed_out"]


class Progress(BaseModel):
    step: int = Field(description="Training steps done whose measurements are stored (reaches `total` at the end).")
    total: int | None = Field(description="Steps the run will take (training.steps).")


class TrivialBaseline(BaseModel):
    """The best predictor that never looks at the input, fitted on the training split."""

    predictor: str = Field(description="`mean target` (regression) or `class frequencies` (per position for copy).")
    loss: str = Field(description="The loss it is scored with: the run's own (mse | cross_entropy).")
    train_loss: float
    test_loss: float
    chance_accuracy: float | None = Field(description="Test accuracy of always answering the commonest class.")


class ExperimentResult(BaseModel):
    """What the worker reported at the end; non-finite numbers are null."""

    model_config = ConfigDict(extra="ignore")

    final_loss: float | None = None
    final_accuracy: float | None = None
    diverged_at_step: int | None = None
    test_loss: float | None = None
    test_accuracy: float | None = None
    steps_done: int | None = None
    baseline: TrivialBaseline | None = Field(None, description="What a model must beat to have learned anything.")


class AttemptPublic(BaseModel):
    """One claim of the experiment by a worker (README, "Failure handling")."""

    number: int = Field(description="1 for the first attempt, then 2, 3, …")
    worker: str = Field(description="The worker that ran it: Celery node name and process id.")
    started_at: datetime
    resumed_from_step: int | None = Field(description="The checkpoint step it resumed from; null: from the start.")
    ended_at: datetime | None = Field(description="Null while it runs.")
    ending: Literal["finished", "lost", "handed_back"] | None = Field(
        description="`finished`: the run ended there; `lost`: the worker died or went silent (counts against "
        "GRADWATCH_MAX_ATTEMPTS); `handed_back`: the worker shut down and gave the run back to the queue."
    )
    why: str | None = Field(description="How it ended, in words.")

    @classmethod
    def from_record(cls, record: AttemptRecord) -> AttemptPublic:
        return cls(
            number=record.number,
            worker=record.worker,
            started_at=record.started_at,
            resumed_from_step=record.resumed_from_step,
            ended_at=record.ended_at,
            ending=record.ending,  # type: ignore[arg-type]
            why=record.why,
        )


class ExperimentPublic(BaseModel):
    id: str
    name: str
    owner: str = Field(description="Who created it: the owner of the token that submitted it.")
    tags: list[str]
    status: Status
    progress: Progress
    spec: dict[str, Any] = Field(description="The validated spec with every default filled in.")
    queue: str
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    result: ExperimentResult | None
    sweep_id: str | None
    sweep_params: dict[str, Any] | None
    attempts: list[AttemptPublic] | None = Field(
        None,
        description="Every worker's attempt at this run (null in lists; in the answers about one experiment), "
        "oldest first; a run resumed after its worker died or shut down has several.",
    )

    @classmethod
    def from_record(cls, record: ExperimentRecord, attempts: list[AttemptRecord] | None = None) -> ExperimentPublic:
        return cls(
            id=record.id,
            name=record.name,
            owner=record.owner,
            tags=record.tags,
            status=record.status,  # type: ignore[arg-type]
            progress=Progress(step=record.progress_step, total=record.progress_total),
            spec=record.spec,
            queue=record.queue,
            cancel_requested=record.cancel_requested,
            created_at=record.created_at,
            started_at=record.started_at,
            finished_at=record.finished_at,
            error=record.error,
            result=None if record.result is None else ExperimentResult.model_validate(record.result),
            sweep_id=record.sweep_id,
            sweep_params=record.sweep_params,
            attempts=None if attempts is None else [AttemptPublic.from_record(attempt) for attempt in attempts],
        )


class ExperimentList(BaseModel):
    items: list[ExperimentPublic]
    total: int = Field(description="Experiments matching the filters, on every page.")
    offset: int
    limit: int
    missing: list[str] = Field(
        default_factory=list, description="With `ids`: the ids that none of your experiments has (in the order asked)."
    )
