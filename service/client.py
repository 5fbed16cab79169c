"""A Python client for the gradwatch REST API, for lab pipelines and the CLI.

    from service.client import GradwatchClient

    with GradwatchClient("http://127.0.0.1:8000") as client:
        experiment = client.submit({"model": {"type": "mlp"}, "dataset": {"name": "digits"}})
        experiment = client.wait(experiment["id"], timeout=600)
        series = client.series(experiment["id"], "grad_mean_abs")

Every method returns the API's JSON as plain dicts and lists; any 4xx/5xx answer raises
`GradwatchError` carrying the API's own message, so a pipeline can show the user what
was wrong. The client only speaks HTTP: it imports neither torch nor the service's code
(only, when no token is given, the settings that say where to find one).

It sends `Authorization: Bearer <token>`: the `token` argument, else GRADWATCH_TOKEN,
else the token `gradwatch up` wrote to `$GRADWATCH_HOME/token`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import httpx

API_PREFIX = "/api/v1"
# Statuses after which an experiment never changes again.
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "diverged", "cancelled", "timed_out"})


class GradwatchError(Exception):
    """The API answered with an error, or could not be reached.

    `status_code` is the HTTP status (None when the server did not answer) and `detail`
    the API's `detail` field as it was sent (a string, or pydantic's list of errors).
    """

    def __init__(self, message: str, status_code: int | None = None, detail: Any = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.detail = detail


def _describe_detail(detail: Any) -> str:
    """One readable line from FastAPI's `detail`: a string, or a list of field errors."""
    if isinstance(detail, list):
        parts = []
        for error in detail:
            if isinstance(error, Mapping):
                location = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
                message = str(error.get("msg", error))
                parts.append(f"{location}: {message}" if location else message)
            else:
                parts.append(str(error))
        return "; ".join(parts)
    if isinstance(detail, Mapping):
        return str(detail.get("message") or detail.get("msg") or detail)
    return str(detail)


class GradwatchClient:
    """Wraps `/api/v1` with httpx; one connection pool per client (use it as a context manager)."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        token: str | None = None,
    ) -> None:
        """`token`: None finds the configured one (see the module's docstring); "" sends none."""
        self.base_url = base_url.rstrip("/")
        if token is None:
            from service.auth.token_file import configured_token
            from service.config import Settings

            token = configured_token(Settings())
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport, headers=headers)

    def __enter__(self) -> GradwatchClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- experiments ---------------------------------------------------------------------

    def submit(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        """Create an experiment from an ExperimentSpec; returns it with `status: "queued"`."""
        return self._request("POST", "/experiments", json=dict(spec))

    def get(self, experiment_id: str) -> dict[str, Any]:
        return self._request("GET", f"/experiments/{experiment_id}")

    def list(
        self,
        status: str | None = None,
        tag: str | None = None,
        name: str | None = None,
        limit: int | None = None,
        offset: int | None = None,
        owner: str | None = None,
    ) -> dict[str, Any]:
        """One page of your experiments (an admin token: everyone's, or `owner`'s), newest
        first, filtered by status, tag and name."""
        params = {"status": status, "tag": tag, "name": name, "limit": limit, "offset": offset, "owner": owner}
        return self._request("GET", "/experiments", params=_without_none(params))

    def cancel(self, experiment_id: str) -> dict[str, Any]:
        """Ask a queued or running experiment to stop; it keeps what it measured."""
        return self._request("POST", f"/experiments/{experiment_id}/cancel")

    def delete(self, experiment_id: str) -> None:
        self._request("DELETE", f"/experiments/{experiment_id}")

    def wait(
        self,
        experiment_id: str,
        timeout: float | None = None,
        poll: float = 1.0,
        on_update: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll until the experiment is finished (any terminal status) and return it.

        `on_update` sees every polled state (the CLI draws its progress bar from it).
        Raises `TimeoutError` when `timeout` seconds pass first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            experiment = self.get(experiment_id)
            if on_update is not None:
                on_update(experiment)
            if experiment["status"] in TERMINAL_STATUSES:
                return experiment
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(
                    f"experiment {experiment_id} is still {experiment['status']} after {timeout:g} s"
                )
            time.sleep(poll if deadline is None else max(0.0, min(poll, deadline - time.monotonic())))

    # -- measurements --------------------------------------------------------------------

    def metrics(self, experiment_id: str) -> dict[str, Any]:
        """The metric names and layers this experiment has recorded."""
        return self._request("GET", f"/experiments/{experiment_id}/metrics")

    def series(
        self,
        experiment_id: str,
        metric: str,
        layers: str | Iterable[str] | None = None,
        step_min: int | None = None,
        step_max: int | None = None,
        max_points: int | None = None,
    ) -> dict[str, Any]:
        """`{"metric", "series": [{"layer", "steps", "values"}]}`; non-finite values are None."""
        params: list[tuple[str, str | int]] = [("metric", metric)]
        if layers is not None:
            params += [("layer", layer) for layer in ([layers] if isinstance(layers, str) else layers)]
        for key, value in (("step_min", step_min), ("step_max", step_max), ("max_points", max_points)):
            if value is not None:
                params.append((key, value))
        return self._request("GET", f"/experiments/{experiment_id}/series", params=params)

    def timesteps(self, experiment_id: str, step: int | None = None) -> dict[str, Any]:
        """The gradient through time of a recurrent model: a row per step, a column per t."""
        params = {} if step is None else {"step": step}
        return self._request("GET", f"/experiments/{experiment_id}/timesteps", params=params)

    def summary(self, experiment_id: str) -> dict[str, Any]:
        """The diagnosis: verdict (`vanishing`, `exploding`, `healthy`), evidence, remedies."""
        return self._request("GET", f"/experiments/{experiment_id}/summary")

    def profile(self, experiment_id: str, metric: str = "grad_mean_abs", max_points: int | None = None) -> dict[str, Any]:
        """The step × layer matrix of a per-layer metric (the depth picture)."""
        params = _without_none({"metric": metric, "max_points": max_points})
        return self._request("GET", f"/experiments/{experiment_id}/profile", params=params)

    def horizon(self, experiment_id: str) -> dict[str, Any]:
        """Recurrent models: the memory horizon per recorded step."""
        return self._request("GET", f"/experiments/{experiment_id}/horizon")

    def plot(self, path: str, **params: Any) -> bytes:
        """A PNG picture, e.g. `plot(f"/experiments/{id}/plot.png", metric="grad_mean_abs")`."""
        return self._request("GET", path, params=_without_none(params), raw=True)

    # -- sweeps --------------------------------------------------------------------------

    def submit_sweep(self, base: Mapping[str, Any], grid: Mapping[str, list[Any]], name: str | None = None) -> dict[str, Any]:
        """One experiment per combination of `grid` (dotted spec paths → values)."""
        body = _without_none({"name": name, "base": dict(base), "grid": dict(grid)})
        return self._request("POST", "/sweeps", json=body)

    def sweep(self, sweep_id: str) -> dict[str, Any]:
        return self._request("GET", f"/sweeps/{sweep_id}")

    def compare(
        self, sweep_id: str, metric: str, layer: str | None = None, max_points: int | None = None
    ) -> dict[str, Any]:
        """Every member's series aligned on step, labelled, and aggregated over seeds."""
        params = _without_none({"metric": metric, "layer": layer, "max_points": max_points})
        return self._request("GET", f"/sweeps/{sweep_id}/compare", params=params)

    def health(self) -> dict[str, Any]:
        """200 once the API, the database and the broker answer; raises otherwise."""
        return self._request("GET", "/health")

    # -- plumbing ------------------------------------------------------------------------

    def _request(self, method: str, path: str, raw: bool = False, **kwargs: Any) -> Any:
        url = API_PREFIX + path
        try:
            response = self._http.request(method, url, **kwargs)
        except httpx.HTTPError as error:
            raise GradwatchError(
                f"cannot reach the gradwatch API at {self.base_url} ({error}); "
                "is it running (`gradwatch up`), and is GRADWATCH_API_URL right?"
            ) from error
        if response.is_error:
            try:
                body = response.json()
            except ValueError:
                body = None
            detail = body.get("detail", body) if isinstance(body, dict) else response.text
            # The API's one error shape puts the readable sentence in `message`.
            message = (body.get("message") if isinstance(body, dict) else None) or _describe_detail(detail)
            message = message or response.reason_phrase
            raise GradwatchError(
                f"{method} {url} → {response.status_code}: {message}",
                status_code=response.status_code,
                detail=detail,
            )
        if raw:
            return response.content
        if response.status_code == 204 or not response.content:
            return None
        return response.json()


def _without_none(params: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in params.items() if value is not None}
