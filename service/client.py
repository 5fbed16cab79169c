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

It rides out a flaky network: connection errors, timeouts and 502/503/504 (and a 429
with `Retry-After`) are retried with jittered exponential backoff, honouring
`Retry-After`, for at most `retry_for` seconds per call (`service/client_retry.py`).
That is safe for every call because each create carries an `Idempotency-Key` of its own
(the same on every retry of that call): a retry whose first try did reach the server
gets the experiment or sweep that try created, never a second one.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import httpx

from service.client_retry import RetryPolicy, retry_after_s, should_retry, sse_data

API_PREFIX = "/api/v1"
# Statuses after which an experiment never changes again.
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "diverged", "cancelled", "timed_out"})
# Longest silence on the event stream before the client checks the experiment itself.
EVENTS_READ_TIMEOUT_S = 30.0

log = logging.getLogger("gradwatch.client")


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
        retry_for: float = 60.0,
    ) -> None:
        """`token`: None finds the configured one (see the module's docstring); "" sends none.
        `timeout`: seconds for one HTTP exchange; `retry_for`: the most seconds one call
        spends retrying after connection errors and 502/503/504 (0: never retry)."""
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.retry = RetryPolicy(retry_for=retry_for)
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

    def submit(self, spec: Mapping[str, Any], idempotency_key: str | None = None) -> dict[str, Any]:
        """Create an experiment from an ExperimentSpec; returns it with `status: "queued"`.

        `idempotency_key`: yours (e.g. a pipeline's task-run id, so that a re-run of the
        task finds the experiment it created); by default a new UUID for this call."""
        return self._request("POST", "/experiments", json=dict(spec), headers=_key_header(idempotency_key))

    def get_many(self, experiment_ids: Iterable[str]) -> dict[str, Any]:
        """Many experiments in one call (`GET /experiments?ids=…`): `items`, and `missing`
        for the ids none of yours has. At most the server's max_bulk_ids (500) per call."""
        return self._request("GET", "/experiments", params={"ids": ",".join(experiment_ids)})

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
        self._request("DELETE", f"/experiments/{experiment_id}", gone_ok=True)

    def deliveries(self, experiment_id: str) -> dict[str, Any]:
        """The experiment's callback (`notify`) and every delivery attempt."""
        return self._request("GET", f"/experiments/{experiment_id}/deliveries")

    def callback_secret(self, rotate: bool = False) -> str:
        """The secret your callbacks are signed with; `rotate` replaces it first."""
        if rotate:
            return self._request("POST", "/callbacks/secret/rotate")["secret"]
        return self._request("GET", "/callbacks/secret")["secret"]

    def wait(
        self,
        experiment_id: str,
        timeout: float | None = None,
        poll: float = 1.0,
        on_update: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Follow the experiment until it is finished (any terminal status) and return it.

        Follows the API's event stream (`GET /experiments/{id}/events`) where it has one,
        else (404, or the stream breaks) polls every `poll` seconds. `on_update` sees
        every state (the CLI draws its progress bar from it). Raises `TimeoutError` when
        `timeout` seconds pass first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        finished = self._follow_events(experiment_id, deadline, on_update)
        if finished is not None:
            return finished
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

    def _follow_events(
        self, experiment_id: str, deadline: float | None, on_update: Callable[[dict[str, Any]], None] | None
    ) -> dict[str, Any] | None:
        """The finished experiment, followed on its event stream; None to fall back to
        polling (no such route, the stream ended or broke, or the deadline is near)."""
        url = f"{API_PREFIX}/experiments/{experiment_id}/events"
        while deadline is None or time.monotonic() < deadline:
            remaining = EVENTS_READ_TIMEOUT_S if deadline is None else deadline - time.monotonic()
            read_timeout = max(0.1, min(EVENTS_READ_TIMEOUT_S, remaining))
            try:
                with self._http.stream(
                    "GET", url, headers={"Accept": "text/event-stream"},
                    timeout=httpx.Timeout(self.timeout, read=read_timeout),
                ) as response:
                    # 404: an API without the stream (or no such experiment: the first poll says so).
                    if response.is_error or "text/event-stream" not in response.headers.get("content-type", ""):
                        return None
                    for data in sse_data(response.iter_lines()):
                        if isinstance(data, dict) and "series" in data and "through" in data:
                            continue  # new points: wait() follows the state only
                        full = isinstance(data, dict) and {"id", "status", "progress"} <= data.keys()
                        experiment = data if full else self.get(experiment_id)
                        if on_update is not None:
                            on_update(experiment)
                        if experiment["status"] in TERMINAL_STATUSES:
                            return experiment if full and "spec" in experiment else self.get(experiment_id)
                        if deadline is not None and time.monotonic() >= deadline:
                            return None  # a stream that keeps talking must not outlast the timeout
                    return None  # the server closed the stream before the end: poll
            except httpx.ReadTimeout:
                experiment = self.get(experiment_id)  # a silent stream: look, then listen again
                if experiment["status"] in TERMINAL_STATUSES:
                    return experiment
            except httpx.TransportError:
                return None
        return None

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

    def histograms(self, experiment_id: str, metric: str = "grad_log10_abs", layer: str | None = None) -> dict[str, Any]:
        """`{"metric", "edges", "histograms": [{"layer", "steps", "counts", "zero", …}]}`: step × bin counts."""
        params = _without_none({"metric": metric, "layer": layer})
        return self._request("GET", f"/experiments/{experiment_id}/histograms", params=params)

    def summary(self, experiment_id: str) -> dict[str, Any]:
        """The diagnosis: verdict (`vanishing`, `exploding`, `not_learning`, `healthy`, `no_data`), headline, evidence, remedies."""
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

    def submit_sweep(
        self,
        base: Mapping[str, Any],
        grid: Mapping[str, list[Any]],
        name: str | None = None,
        notify: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """One experiment per combination of `grid` (dotted spec paths → values);
        `notify` ({url, events}) is called once every member has ended."""
        body = _without_none({"name": name, "base": dict(base), "grid": dict(grid), "notify": notify})
        return self._request("POST", "/sweeps", json=body, headers=_key_header(idempotency_key))

    def sweep(self, sweep_id: str) -> dict[str, Any]:
        return self._request("GET", f"/sweeps/{sweep_id}")

    def sweep_deliveries(self, sweep_id: str) -> dict[str, Any]:
        """The sweep's own callback (its `notify`) and every delivery attempt."""
        return self._request("GET", f"/sweeps/{sweep_id}/deliveries")

    def compare(
        self, sweep_id: str, metric: str | None = None, layer: str | None = None, max_points: int | None = None
    ) -> dict[str, Any]:
        """Every member's series aligned on step, labelled, and aggregated over seeds
        (`metric` default: the server's, loss)."""
        params = _without_none({"metric": metric, "layer": layer, "max_points": max_points})
        return self._request("GET", f"/sweeps/{sweep_id}/compare", params=params)

    def sweeps(self, limit: int | None = None, offset: int | None = None, name: str | None = None,
               owner: str | None = None) -> dict[str, Any]:
        """One page of your sweeps, newest first, each with its members' count per status."""
        params = _without_none({"limit": limit, "offset": offset, "name": name, "owner": owner})
        return self._request("GET", "/sweeps", params=params)

    def compare_experiments(
        self, experiment_ids: Iterable[str], metric: str | None = None, layer: str | None = None,
        max_points: int | None = None,
    ) -> dict[str, Any]:
        """Any experiments (sweep or not) on one metric and layer, labelled by the spec
        fields that differ, each with its verdict (at most the server's max_compare_ids)."""
        params = _without_none({"ids": ",".join(experiment_ids), "metric": metric, "layer": layer,
                                "max_points": max_points})
        return self._request("GET", "/compare", params=params)

    # -- pandas (the `frames` extra) -----------------------------------------------------

    def series_frame(self, experiment_id: str, metric: str, **options: Any) -> Any:
        """`series(experiment_id, metric, **options)` (layers, step_min, step_max,
        max_points) as a pandas DataFrame: indexed by `step`, one column per layer in depth
        order (a global metric: one column named after it), NaN where not measured."""
        from service.frames import series_frame

        return series_frame(self.series(experiment_id, metric, **options))

    def export(self, experiment_id: str, format: str = "parquet") -> bytes:  # noqa: A002
        """Every recorded value as one long table (`step, metric, layer, timestep, value`),
        as the bytes of a Parquet or CSV file."""
        return self._request("GET", f"/experiments/{experiment_id}/export", params={"format": format}, raw=True)

    def export_frame(self, experiment_id: str) -> Any:
        """`export(…)` as a long pandas DataFrame, one row per measured value."""
        from service.frames import export_frame

        return export_frame(self.export(experiment_id, "parquet"))
    # -- reproductions -------------------------------------------------------------------

    def reproductions(self) -> dict[str, Any]:
        """The catalogue: every study, its claims, protocol and expected numbers."""
        return self._request("GET", "/reproductions")

    def reproduce(self, name: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Start the study `name` as a sweep of the caller's; `overrides` make it a variant."""
        return self._request("POST", f"/reproductions/{name}/runs", json={"overrides": dict(overrides or {})})

    def reproduction_run(self, run_id: str) -> dict[str, Any]:
        return self._request("GET", f"/reproduction-runs/{run_id}")

    def wait_reproduction(
        self,
        run_id: str,
        timeout: float | None = None,
        poll: float = 2.0,
        on_update: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll the run until every member has finished; its report then says per claim
        whether it reproduced. TimeoutError past `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            report = self.reproduction_run(run_id)
            if on_update is not None:
                on_update(report)
            if report["status"] == "finished":
                return report
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"reproduction run {run_id} still {report['status']} after {timeout} s")
            time.sleep(poll)

    def health(self) -> dict[str, Any]:
        """200 once the API, the database and the broker answer; raises otherwise."""
        return self._request("GET", "/health")

    # -- plumbing ------------------------------------------------------------------------

    def _send(self, method: str, url: str, **kwargs: Any) -> tuple[httpx.Response, bool]:
        """The first answer not worth retrying, and whether an earlier try may have reached
        the server and lost its answer; raises GradwatchError when the server stays
        unreachable past `retry_for`."""
        deadline = time.monotonic() + self.retry.retry_for
        attempt = 0
        lost = False
        while True:
            attempt += 1
            try:
                response = self._http.request(method, url, **kwargs)
            except httpx.TransportError as error:
                response, reason = None, f"{type(error).__name__}: {error}"
                failure: Exception = error
                lost = lost or not isinstance(error, httpx.ConnectError)  # refused: it never arrived
            else:
                if not should_retry(response):
                    return response, lost
                reason = f"{response.status_code} {response.reason_phrase}"
            delay = self.retry.delay_s(attempt, None if response is None else retry_after_s(response))
            if time.monotonic() + delay > deadline:
                if response is not None:
                    return response, lost
                raise GradwatchError(
                    f"cannot reach the gradwatch API at {self.base_url} after {attempt} tries in "
                    f"{self.retry.retry_for:g} s ({reason}); is it running (`gradwatch up`), and is "
                    "GRADWATCH_API_URL right?"
                ) from failure
            log.warning("%s %s: %s; retry %d in %.1f s", method, url, reason, attempt, delay)
            time.sleep(delay)

    def _request(self, method: str, path: str, raw: bool = False, gone_ok: bool = False, **kwargs: Any) -> Any:
        url = API_PREFIX + path
        response, lost = self._send(method, url, **kwargs)
        if gone_ok and lost and response.status_code == 404:
            return None  # an earlier try did it; its answer was lost
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


def _key_header(key: str | None) -> dict[str, str]:
    """The Idempotency-Key of one create call: the same on each of its retries."""
    return {"Idempotency-Key": key or str(uuid.uuid4())}


def _without_none(params: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in params.items() if value is not None}
