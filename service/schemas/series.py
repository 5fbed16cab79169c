"""What the API returns about recorded probes. Non-finite values are null."""

from __future__ import annotations

from pydantic import BaseModel, Field


class SeriesPoints(BaseModel):
    layer: str | None = Field(description="Parameter or layer name; null for global metrics.")
    steps: list[int]
    values: list[float | None] = Field(description="NaN and ±Inf are null.")


class SeriesResponse(BaseModel):
    metric: str
    series: list[SeriesPoints] = Field(description="One per layer, ordered input → output.")


class MetricsResponse(BaseModel):
    metrics: dict[str, list[str | None]] = Field(
        description="Metric name → its layers ordered input → output ([null] for global metrics)."
    )


class TimestepsResponse(BaseModel):
    layer: int = Field(description="Index of the recurrent layer (0 = nearest the input).")
    layers: list[int] = Field(description="Recurrent layers with timestep data.")
    steps: list[int] = Field(description="Training steps recorded: one row each.")
    timesteps: list[int] = Field(description="Timesteps t recorded (0-based): one column each.")
    hidden_grad_norm: list[list[float | None]] = Field(description="‖∂L/∂h_t‖, steps × timesteps.")
    cell_grad_norm: list[list[float | None]] | None = Field(
        description="‖∂L/∂c_t‖ for LSTMs, else null."
    )
