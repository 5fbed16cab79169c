"""Pydantic v2 models of the API; the database tables live in `service.db`."""

from service.schemas.experiments import ExperimentList, ExperimentPublic, ExperimentResult, Progress
from service.schemas.series import MetricsResponse, SeriesPoints, SeriesResponse, TimestepsResponse
from service.schemas.spec import (
    ClippingSpec,
    DatasetSpec,
    ExperimentSpec,
    InitSpec,
    LoggingSpec,
    ModelSpec,
    TrainingSpec,
)

__all__ = [
    "ClippingSpec",
    "DatasetSpec",
    "ExperimentList",
    "ExperimentPublic",
    "ExperimentResult",
    "ExperimentSpec",
    "InitSpec",
    "LoggingSpec",
    "MetricsResponse",
    "ModelSpec",
    "Progress",
    "SeriesPoints",
    "SeriesResponse",
    "TimestepsResponse",
    "TrainingSpec",
]
