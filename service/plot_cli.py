"""`gradwatch plot ID`: save an experiment's pictures as PNG files, through the API.

`plot_command` is the body of the CLI command (registered in `service/cli.py`); it asks
the API for the pictures rather than rendering them itself, so what a user saves is what
the API serves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from service.client import GradwatchClient, GradwatchError
from service.schemas.spec import RECURRENT_MODELS



def plot_command(
    experiment_id: str,
    out_dir: Path | str = ".",
    metric: str = "grad_mean_abs",
    api_url: str = "http://127.0.0.1:8000",
    transport: httpx.BaseTransport | None = None,
    token: str | None = None,
) -> list[Path]:
    """Save `<id>-<metric>.png`, `<id>-profile-<metric>.png` (per-layer metrics) and, for
    recurrent models, `<id>-timesteps.png` into `out_dir`; return the paths written.

    Raises GradwatchError (with the API's own explanation) when the API refuses.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with GradwatchClient(api_url, transport=transport, token=token) as client:
        experiment = client.get(experiment_id)
        metrics: dict[str, Any] = client.metrics(experiment_id).get("metrics", {})
        if metric not in metrics:
            raise GradwatchError(
                f"experiment {experiment_id} has no metric {metric!r} (yet); it has: "
                f"{', '.join(sorted(metrics)) or 'none yet'}. Pass another with --metric."
            )
        base = f"/experiments/{experiment_id}"
        wanted = [(f"{base}/plot.png", {"metric": metric}, f"{experiment_id}-{metric}.png")]
        if metrics[metric] != [None]:
            wanted.append((f"{base}/profile.png", {"metric": metric}, f"{experiment_id}-profile-{metric}.png"))
        if (experiment.get("spec", {}).get("model") or {}).get("type") in RECURRENT_MODELS:
            wanted.append((f"{base}/timesteps.png", {}, f"{experiment_id}-timesteps.png"))
        for path, params, filename in wanted:
            target = out / filename
            target.write_bytes(client.plot(path, **params))
            written.append(target)
    return written
