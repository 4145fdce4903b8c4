"""``newsbias serve``: an HTTP API (FastAPI + uvicorn) and a classification page for one model.

Endpoints: ``POST /v1/classify``, ``POST /v1/explain`` (which words moved the answer:
:func:`newsbias.explain.explain_article`), ``GET /health``, ``GET /v1/model``, OpenAPI at ``/docs``, and a
small page at ``/``. The model is loaded once (at startup, in a thread, or injected by the
caller, by :meth:`newsbias.classifier.Classifier.from_options`) and scored with
:meth:`~newsbias.classifier.Classifier.classify` — the same prompt, truncation and scoring as ``newsbias predict``.

Concurrent requests are micro-batched: each request puts its texts on an asyncio queue; one
worker takes the first waiting request, lets others join for up to ``max_wait_ms`` or until
``max_batch`` texts are gathered, and scores them in one call in a worker thread, so the event
loop never blocks on inference.

Errors are JSON ``{"error": "...", "detail": ...}``: 413 for a body or article over the limits,
422 for malformed JSON, schema errors (the field is named) and empty texts, 503 while the model
is loading, when it failed to load or while the server shuts down, and a bare 500 without a traceback for
anything else. On SIGTERM or Ctrl-C the requests already received are scored and answered (for up to
``serve.shutdown_timeout_s``) before the server stops; new connections are refused meanwhile.

The page is the Jinja2 template ``templates/page.html``. ``/docs`` and ``/redoc`` serve Swagger UI
and ReDoc from this server (no CDN) when the ``fastapi-offline`` package is installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, Optional, Union

from pydantic import (AfterValidator, AliasChoices, BaseModel, ConfigDict, Field, StrictInt, StringConstraints, field_validator,
                      model_validator)

from .classifier import Classifier
from .config import ServeConfig
from .predict import load_classifier
from .records import Article, has_words
from .errors import NewsbiasError
from .modeling import set_threads
from .templates import render

log = logging.getLogger(__name__)


def load_model(cfg: ServeConfig) -> Classifier:
    """The :class:`~newsbias.classifier.Classifier` ``cfg`` names: base + adapter, a trained model dir, or a base."""
    return load_classifier(cfg, stage="serve")


_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"), None)


def _valid_unicode(v: str) -> str:
    """Text that encodes as UTF-8: an unpaired surrogate (JSON ``"\\ud83d"``) is refused, not scored."""
    try:
        v.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"holds an unpaired surrogate ({v[exc.start]!r} at character {exc.start}): not valid "
                         f"Unicode") from None
    if "\x00" in v:
        raise ValueError("holds a NUL character")
    return v


def _not_empty(v: str) -> str:
    v = _valid_unicode(v)
    if not has_words(v):
        raise ValueError("text is empty" if not v.translate(_INVISIBLE).strip() else "text has no letter or digit to read")
    return v


Text = Annotated[str, AfterValidator(_not_empty)]
Plain = Annotated[str, AfterValidator(_valid_unicode)]


TITLE_FIELD = ("Optional headline. Scored as `title\\ntext` when the model's training texts began with their titles "
               "(prep.clean.prepend_title, recorded in its newsbias.json), as `newsbias predict` scores a title "
               "field; otherwise not read.")


NOT_READ = ("Not read by the model (a prep record can be sent as it is); the outlet, else the source, is echoed "
            "in the result's `outlet`.")


class ShuttingDown(RuntimeError):
    """A request still waiting for the model when the server stops: answered 503."""


class ArticleBody(BaseModel):
    """An article's title and text as both endpoints take them: a prep record's fields are accepted as they are."""

    title: Optional[Plain] = Field(default=None, description=TITLE_FIELD)
    text: Text = Field(validation_alias=AliasChoices("text", "input"),
                       description="Article body (not empty); a prep record's `input` is read as it.")
    instruction: Optional[Plain] = Field(default=None, max_length=4096, description="A prep record's instruction: "
                                         "not read (the model scores with the prompt it was trained with).")
    output: Optional[Plain] = Field(default=None, max_length=300, description="A prep record's gold label: not read.")


class ArticleIn(ArticleBody):
    """One article: ``text`` is required; ``title`` is read as ``newsbias predict`` reads it (see its field)."""

    model_config = ConfigDict(extra="forbid")
    id: Optional[Union[StrictInt, Annotated[Plain, StringConstraints(max_length=512)]]] = Field(
        default=None, description="Echoed back as a string (as `newsbias predict` writes ids); defaults to the position.")
    outlet: Optional[Plain] = Field(default=None, max_length=300, description=f"The outlet's domain. {NOT_READ}")
    source: Optional[Plain] = Field(default=None, max_length=300, description=f"The outlet's name. {NOT_READ}")
    url: Optional[Plain] = Field(default=None, max_length=4096, description=f"The article's address. {NOT_READ}")
    date: Optional[Plain] = Field(default=None, max_length=64, description=f"Publication date. {NOT_READ}")

    @field_validator("id", mode="before")
    @classmethod
    def _id_type(cls, v: Any) -> Any:
        # checked before the union, whose own error names each member's validator internals
        if v is not None and (isinstance(v, bool) or not isinstance(v, (str, int))):
            raise ValueError(f"must be a string or an integer, got {type(v).__name__}")
        if isinstance(v, int) and len(str(abs(v))) > 512:  # as long as the longest string id
            raise ValueError("must be an integer of at most 512 digits")
        return v


class ClassifyRequest(BaseModel):
    """Either ``texts`` (plain strings) or ``articles`` (objects with id / title / text), not both."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"texts": ["The senate passed the bill on Tuesday ..."]},
                     {"articles": [{"id": "a1", "title": "Budget deal", "text": "Lawmakers agreed ..."}]}]})
    texts: Optional[list[Text]] = Field(default=None, min_length=1)
    articles: Optional[list[ArticleIn]] = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_of(self) -> "ClassifyRequest":
        if (self.texts is None) == (self.articles is None):
            raise ValueError("give exactly one of `texts` (list of strings) or `articles` (list of objects)")
        with_id = sum(a.id is not None for a in self.articles or [])
        if 0 < with_id < len(self.articles or []):
            # a missing id defaults to the position, which could equal another article's own id
            raise ValueError(f"give an id to every article or to none ({with_id} of {len(self.articles or [])} "
                             f"have one)")
        return self

    def outlets(self) -> list[Optional[str]]:
        """The outlet (else the source) each article names, in order; None for plain texts."""
        if self.texts is not None:
            return [None] * len(self.texts)
        return [a.outlet or a.source for a in self.articles or []]

    def items(self, text_of: Callable[[Optional[str], str], str]) -> list[tuple[str, str]]:
        """(id, text to score) per article, ``text_of(title, text)`` making the text; ids default to the position."""
        if self.texts is not None:
            return [(str(i), t) for i, t in enumerate(self.texts)]
        return [(str(a.id) if a.id is not None else str(i), text_of(a.title, a.text))
                for i, a in enumerate(self.articles or [])]


class Prediction(BaseModel):
    id: str
    pred: str
    probs: dict[str, float]
    model: str
    adapter: Optional[str] = None
    outlet: Optional[str] = Field(default=None, description="The article's outlet (else source), as it was sent.")
    tokens_read: Optional[int] = Field(default=None, description="Tokens of the article the model read.")
    truncated: Optional[bool] = Field(default=None, description="True when the article was cut to fit max_length.")


class ClassifyResponse(BaseModel):
    results: list[Prediction]
    model: str
    adapter: Optional[str] = None
    batch_texts: int = Field(description="Texts in the largest micro-batch this request was scored in.")
    elapsed_ms: float


class ExplainRequest(ArticleBody):
    """One article to explain; ``source`` / ``outlet`` name its outlet, whose mentions are flagged as cues."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"title": "Budget deal", "text": "WASHINGTON (Reuters) - Lawmakers agreed ...",
                      "source": "Reuters", "outlet": "reuters.com"}]})
    source: Optional[Plain] = Field(default=None, max_length=300, description="The outlet's name (e.g. Reuters).")
    outlet: Optional[Plain] = Field(default=None, max_length=300, description="The outlet's domain (e.g. reuters.com).")
    span: int = Field(default=1, ge=1, le=64, description="Words left out at a time.")
    top_k: int = Field(default=10, ge=1, le=200, description="Words listed in `top`.")


class WordEffect(BaseModel):
    text: str
    start: int = Field(description="Character offset in the scored text (`text` of the response).")
    end: int
    effect: dict[str, float] = Field(description="Per label: its probability minus its probability without the word.")
    cue: Optional[str] = Field(default=None, description="name, link, byline or dateline: one of the outlet's cues.")


class ExplainResponse(BaseModel):
    pred: str
    probs: dict[str, float]
    model: str
    adapter: Optional[str] = None
    text: str = Field(description="The text scored (title + newline + body when the model reads titles: see "
                                  "`title`).")
    words: list[WordEffect] = Field(description="Every word the model read, in reading order.")
    top: list[WordEffect] = Field(description="The words that supported the answer most, strongest first.")
    without_cues: Optional[dict[str, Any]] = Field(default=None, description="The answer without every outlet cue "
                                                                             "(null when the text has none).")
    tokens_read: int
    truncated: bool
    elapsed_ms: float


@dataclass
class _Job:
    texts: list[str]
    future: asyncio.Future
    batch_texts: int = 0


@dataclass
class MicroBatcher:
    """Gathers concurrent requests into batches of up to ``max_batch`` texts for ``score_fn``.

    ``score_fn(texts) -> list[result]`` runs in a worker thread, one batch at a time (one model
    instance). A request with more texts than ``max_batch`` is scored alone, in one call.
    """

    score_fn: Callable[[list[str]], list[Any]]
    max_batch: int = 16
    max_wait_ms: float = 5.0
    batches: list[int] = field(default_factory=list)  # sizes of recent batches (for tests and /v1/model)
    _queue: Optional[asyncio.Queue] = None
    _task: Optional[asyncio.Task] = None
    _carry: Optional[_Job] = None  # a request that did not fit the last batch: first in the next
    _taken: list[_Job] = field(default_factory=list)  # the batch being gathered or scored: stop() fails them


    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run(), name="newsbias-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        left = self._taken + ([self._carry] if self._carry is not None else [])
        while self._queue is not None and not self._queue.empty():
            left.append(self._queue.get_nowait())
        for job in left:
            if not job.future.done():
                job.future.set_exception(ShuttingDown("server shutting down; retry on another instance"))

    async def submit(self, texts: list[str]) -> tuple[list[Any], int]:
        """Results for ``texts`` (in order) and the size of the batch they were scored in."""
        if self._queue is None:
            raise RuntimeError("batcher not started")
        job = _Job(list(texts), asyncio.get_running_loop().create_future())
        await self._queue.put(job)
        result = await job.future
        return result, job.batch_texts

    async def _gather(self) -> list[_Job]:
        assert self._queue is not None
        if self._carry is not None:
            self._taken, self._carry = [self._carry], None
        else:
            self._taken = [await self._queue.get()]
        jobs = self._taken
        n = len(jobs[0].texts)
        deadline = time.monotonic() + self.max_wait_ms / 1000
        while n < self.max_batch:
            # take what is already queued without waiting; wait only for the rest of the window
            try:
                nxt = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    nxt = await asyncio.wait_for(self._queue.get(), timeout=left)
                except asyncio.TimeoutError:
                    break
            if n + len(nxt.texts) > self.max_batch:
                self._carry = nxt
                break
            jobs.append(nxt)
            n += len(nxt.texts)
        return jobs

    async def _run(self) -> None:
        while True:
            jobs = await self._gather()
            jobs = [j for j in jobs if not j.future.done()]  # the client went away
            if not jobs:
                continue
            texts = [t for j in jobs for t in j.texts]
            self.batches = (self.batches + [len(texts)])[-1000:]
            try:
                results = await asyncio.to_thread(self.score_fn, texts)
            except Exception:  # one bad request must not fail the others: score each request alone
                log.exception("scoring a batch of %d texts failed; retrying its %d requests one by one",
                              len(texts), len(jobs))
                await self._score_alone(jobs)
                continue
            pos = 0
            for j in jobs:
                if not j.future.done():
                    j.batch_texts = len(texts)
                    j.future.set_result(results[pos:pos + len(j.texts)])
                pos += len(j.texts)

    async def _score_alone(self, jobs: list[_Job]) -> None:
        for j in jobs:
            if j.future.done():
                continue
            try:
                res = await asyncio.to_thread(self.score_fn, j.texts)
            except Exception as exc:  # only this request fails; the worker goes on
                if not j.future.done():
                    j.future.set_exception(exc)
                continue
            if not j.future.done():
                j.batch_texts = len(j.texts)
                j.future.set_result(res)


UNCERTAIN_BELOW = 0.5  # the page marks an answer "uncertain" when its top probability is below this


class BodyLimitMiddleware:
    """ASGI middleware: 413 for a request body over ``max_bytes`` (declared or streamed)."""

    def __init__(self, app: Any, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _send_json(send, 413, _too_large(self.max_bytes))
            return
        # read the whole (bounded) body first, so an oversized chunked body is refused before the app runs
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                await _send_json(send, 413, _too_large(self.max_bytes))
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _too_large(limit: int) -> dict[str, Any]:
    return {"error": f"request body over {limit} bytes; send fewer or shorter articles (serve.max_body_bytes)"}


async def _send_json(send: Callable, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


@dataclass
class _State:
    cfg: ServeConfig
    name: str
    predictor: Optional[Classifier] = None
    error: Optional[str] = None
    batcher: Optional[MicroBatcher] = None
    started: float = field(default_factory=time.time)

    @property
    def adapter_name(self) -> Optional[str]:
        """The LoRA adapter's directory name, as predict's records name its path (None for a trained model
        directory, even when it was passed as the adapter)."""
        adapter = self.predictor.adapter if self.predictor is not None else None
        return Path(adapter).name if adapter else None

    def score(self, texts: list[str]) -> list[dict[str, Any]]:
        """Label, probabilities and the article tokens read, per text (runs in the batcher's worker thread)."""
        assert self.predictor is not None
        results = self.predictor.classify(texts, mode="score", batch_size=self.cfg.max_batch,
                                              windows=self.cfg.windows, pool=self.cfg.pool)
        return [{**r, **read} for r, read in zip(results, self.predictor.reading(texts, self.cfg.windows))]


def create_app(cfg: Optional[ServeConfig] = None, predictor: Optional[Classifier] = None,
               loader: Optional[Callable[[ServeConfig], Classifier]] = None) -> Any:
    """The FastAPI app.

    ``predictor`` (a loaded :class:`~newsbias.classifier.Classifier`) is used as is (tests, or a caller that loaded it);
    otherwise ``loader(cfg)`` (default :func:`load_model`) runs once at startup in a thread, and
    requests get 503 until it is done or if it failed.
    """
    cfg = cfg or ServeConfig()
    set_threads(cfg.threads)
    state = _State(cfg=cfg, name=cfg.run_name(), predictor=predictor)
    app = _new_app(_lifespan(state, loader or load_model))
    app.state.newsbias = state
    app.add_middleware(BodyLimitMiddleware, max_bytes=cfg.max_body_bytes)
    _add_error_handlers(app)
    _add_classify_route(app, state)
    _add_explain_route(app, state)
    _add_info_routes(app, state)
    return app


def _new_app(lifespan: Callable[[Any], Any]) -> Any:
    """A FastAPI app; ``/docs`` and ``/redoc`` load their assets from this server when fastapi-offline is installed."""
    try:
        from fastapi_offline import FastAPIOffline as make_app
    except ImportError:  # plain FastAPI: the docs pages fetch Swagger UI / ReDoc from a CDN
        from fastapi import FastAPI as make_app
    return make_app(title="newsbias", version="1", lifespan=lifespan,
                    description="Classify the political leaning of news articles as left / center / right. "
                                "Labels are learnt from outlet-level ratings: read them as 'reads like outlets "
                                "rated X', not as a judgement of the article.")


def _lifespan(state: _State, loader: Callable[[ServeConfig], Classifier]) -> Callable[[Any], Any]:
    """Start the micro-batcher (and the model loading, unless a predictor was given); stop both on shutdown."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Any):
        state.batcher = MicroBatcher(state.score, max_batch=state.cfg.max_batch, max_wait_ms=state.cfg.max_wait_ms)
        state.batcher.start()
        loading = None if state.predictor is not None else asyncio.create_task(_load(state, loader))
        try:
            yield
        finally:
            if loading is not None and not loading.done():
                loading.cancel()
            await state.batcher.stop()

    return lifespan


async def _load(state: _State, loader: Callable[[ServeConfig], Classifier]) -> None:
    try:
        state.predictor = await asyncio.to_thread(loader, state.cfg)
        log.info("model loaded: %s", state.name)
    except NewsbiasError as exc:
        state.error = str(exc)
        log.error("model failed to load: %s", exc)
    except Exception as exc:  # a broken checkpoint: report it, keep answering /health
        state.error = f"{type(exc).__name__}: {exc}"
        log.exception("model failed to load")


def _error(status: int, message: str, detail: Any = None) -> Any:
    """The JSON error body every route answers with: ``{"error": message, "detail"?: ...}``."""
    from fastapi.responses import JSONResponse

    payload: dict[str, Any] = {"error": message}
    if detail is not None:
        payload["detail"] = detail
    return JSONResponse(payload, status_code=status)


def _body_error(msg: str, kind: str) -> Any:
    return _error(422, f"body: {msg}", [{"loc": ["body"], "field": "body", "msg": msg, "type": kind}])


def _validation_problems(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """FastAPI's validation errors as ``{loc, field, msg, type}``, the field named as ``texts.1``."""
    problems = []
    for e in errors:
        if e.get("type") == "json_invalid":  # FastAPI puts the character offset in loc: not a field
            pos = (e.get("ctx") or {}).get("error") or ""
            problems.append({"loc": ["body"], "field": "body", "msg": f"not valid JSON: {pos}"[:200] if pos else "not valid JSON",
                             "type": "json_invalid"})
            continue
        loc = list(e.get("loc", ()))
        where = ".".join(str(p) for p in loc if p != "body") or "body"
        problems.append({"loc": loc, "field": where, "msg": e.get("msg", "invalid").removeprefix("Value error, "),
                         "type": e.get("type")})
    return problems


def _add_error_handlers(app: Any) -> None:
    """422 naming the field for bad bodies, JSON errors for HTTP errors, a bare 500 for anything else."""
    from fastapi import Request
    from fastapi.encoders import jsonable_encoder
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Any:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json" and not ctype.endswith("+json"):  # none at all: FastAPI reads no JSON either
            got = f"got {ctype[:60]}" if ctype else "the request had none"
            return _body_error(f"send JSON with content-type application/json ({got})", "content_type")
        problems = _validation_problems(list(exc.errors()))
        text = "; ".join(f"{p['field']}: {p['msg']}" for p in problems)
        return _error(422, text[:500] or "invalid request", jsonable_encoder(problems))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Any:
        if exc.status_code == 400 and "parsing the body" in str(exc.detail):
            # undecodable bytes, a compressed body, JSON nested past the parser's depth
            return _body_error("not valid JSON (send UTF-8 encoded, uncompressed, reasonably nested JSON)",
                               "json_invalid")
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> Any:
        log.exception("unhandled error on %s", request.url.path)
        return _error(500, "internal error; see the server log")


def _unavailable(state: _State) -> Any:
    """A 503 while the model is loading or after it failed to load; None once it is ready."""
    if state.predictor is not None:
        return None
    if state.error:
        return _error(503, f"model failed to load: {state.error}")
    return _error(503, "model is still loading; retry shortly")


def _text_of(state: _State) -> Callable[[Optional[str], str], str]:
    """How the loaded model turns an article's title and body into the text it scores
    (:meth:`~newsbias.classifier.Classifier.article_text`); the body alone while none is loaded."""
    return state.predictor.article_text if state.predictor is not None else (lambda title, text: text)


def _over_limits(req: ClassifyRequest, items: list[tuple[str, str]], cfg: ServeConfig) -> Any:
    """A 413 for too many articles or one over ``max_article_chars``; None within the limits."""
    if len(items) > cfg.max_texts:
        return _error(413, f"{len(items)} articles in one request; at most {cfg.max_texts} (serve.max_texts)")
    for i, (_, text) in enumerate(items):
        if len(text) > cfg.max_article_chars:
            where = "texts" if req.texts is not None else "articles"
            return _error(413, f"{where}.{i} has {len(text)} characters; at most {cfg.max_article_chars} "
                               f"(serve.max_article_chars)")
    return None


def _add_classify_route(app: Any, state: _State) -> None:
    @app.post("/v1/classify", response_model=ClassifyResponse,
              responses={413: {"description": "Body, article or article count over the limits"},
                         422: {"description": "Malformed JSON, schema error or empty text (the field is named)"},
                         503: {"description": "Model loading or failed to load"}})
    async def classify(req: ClassifyRequest) -> Any:
        """Label and per-label probabilities for each article (micro-batched with concurrent requests)."""
        t0 = time.perf_counter()
        items = req.items(_text_of(state))
        refused = _over_limits(req, items, state.cfg)
        if refused is None:
            refused = _unavailable(state)
        if refused is not None:
            return refused
        assert state.batcher is not None
        try:
            results, batch_texts = await state.batcher.submit([t for _, t in items])
        except NewsbiasError as exc:
            return _error(422, str(exc))
        except ShuttingDown as exc:
            return _error(503, str(exc))
        except Exception:
            log.exception("classify failed")
            return _error(500, "inference failed; see the server log")
        out = [Prediction(id=i, pred=r["pred"], probs=r["probs"], model=state.name, adapter=state.adapter_name,
                          outlet=o, tokens_read=r.get("tokens_read"), truncated=r.get("truncated"))
               for (i, _), o, r in zip(items, req.outlets(), results)]
        return ClassifyResponse(results=out, model=state.name, adapter=state.adapter_name, batch_texts=batch_texts,
                                elapsed_ms=round((time.perf_counter() - t0) * 1000, 3))


def _add_explain_route(app: Any, state: _State) -> None:
    from .explain import explain_article, top_units

    one_at_a_time = asyncio.Lock()  # an explanation is a forward pass per word: they queue, classify goes on
    queued = [0]

    @app.post("/v1/explain", response_model=ExplainResponse,
              responses={409: {"description": "The server scores several windows (serve.windows > 1)"},
                         413: {"description": "Article over serve.max_article_chars"},
                         422: {"description": "Malformed JSON, schema error or empty text (the field is named)"},
                         503: {"description": "Model loading or failed to load, or serve.max_explain_waiting "
                                               "explanations already queued"}})
    async def explain(req: ExplainRequest) -> Any:
        """Each word's effect on the answer (the probability lost without it) and the outlet cues among them."""
        t0 = time.perf_counter()
        if state.cfg.windows > 1:  # an explanation reads one window: its answer would not be /v1/classify's
            return _error(409, f"explanations read one window of the article, and this server scores "
                               f"{state.cfg.windows} (serve.windows) pooled by {state.cfg.pool}; serve with "
                               f"serve.windows=1 to explain its answers")
        text = _text_of(state)(req.title, req.text)
        if len(text) > state.cfg.max_article_chars:
            return _error(413, f"the article has {len(text)} characters; at most {state.cfg.max_article_chars} "
                               f"(serve.max_article_chars)")
        busy = _unavailable(state)
        if busy is not None:
            return busy
        if queued[0] > state.cfg.max_explain_waiting:  # one running plus the waiting ones
            return _error(503, f"{queued[0]} explanations are queued (serve.max_explain_waiting); retry later")
        article = Article(id="0", text=req.text, title=req.title, source=req.source, outlet=req.outlet)
        queued[0] += 1
        try:
            async with one_at_a_time:
                r = await asyncio.to_thread(explain_article, state.predictor, article, req.span, state.cfg.max_batch)
        except NewsbiasError as exc:
            return _error(422, str(exc))
        finally:
            queued[0] -= 1
        return ExplainResponse(pred=r["pred"], probs=r["probs"], model=state.name, adapter=state.adapter_name,
                               text=text, words=r["units"], top=top_units(r, req.top_k),
                               without_cues=r["without_cues"], tokens_read=r["tokens_read"],
                               truncated=r["truncated"], elapsed_ms=round((time.perf_counter() - t0) * 1000, 3))


def _model_info(state: _State) -> dict[str, Any]:
    """The body of ``GET /v1/model`` for a loaded model."""
    cfg, clf = state.cfg, state.predictor
    assert clf is not None
    s = clf.settings
    return {"name": state.name, "base_model": s.base_model or cfg.model, "adapter": cfg.adapter,
            "head": s.head, "labels": list(s.labels), "max_length": s.prompt.max_length,
            "max_article_tokens": clf.builder.article_budget,
            "truncation": s.prompt.truncation, "chat_template": clf.builder.uses_chat_template,
            "best_val": s.best_val, "temperature": s.temperature, "merged": bool(s.extra.get("merged", False)),
            "reads_title": s.prepend_title, "trained": bool(cfg.adapter or s.best_val),
            "device": str(clf.device), "dtype": clf.precision,
            "quantized": (s.extra.get("onnx") or {}).get("quantize", "none"),
            "serving": {"windows": cfg.windows, "pool": cfg.pool, "max_batch": cfg.max_batch,
                        "max_wait_ms": cfg.max_wait_ms,
                        "max_texts": cfg.max_texts, "max_article_chars": cfg.max_article_chars,
                        "max_body_bytes": cfg.max_body_bytes}}


def _add_info_routes(app: Any, state: _State) -> None:
    from fastapi.responses import HTMLResponse, JSONResponse

    page = render("page.html", uncertain_below=UNCERTAIN_BELOW)

    @app.get("/health")
    async def health() -> Any:
        """200 with ``model_loaded: true`` once the model is ready; 503 while loading or after a failed load."""
        body = {"status": "ok" if state.predictor is not None else ("error" if state.error else "loading"),
                "model_loaded": state.predictor is not None, "error": state.error,
                "uptime_s": round(time.time() - state.started, 1)}
        return JSONResponse(body, status_code=200 if state.predictor is not None else 503)

    @app.get("/v1/model")
    async def model_info() -> Any:
        """Base model, adapter, label set, head, max_length, the training metrics and the probability temperature
        (newsbias.json), device and dtype."""
        busy = _unavailable(state)
        return busy if busy is not None else _model_info(state)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> str:
        return page


def require_server_packages() -> None:
    """A one-line error naming the extra to install when the server's packages are missing, before any model loads."""
    import importlib.util

    missing = [m for m in ("fastapi", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        raise NewsbiasError(f"newsbias serve needs {' and '.join(missing)}: pip install 'newsbias[serve]'")


def check_port(host: str, port: int) -> None:
    """A one-line error before any model loads when ``host:port`` cannot be bound (in use, or not this machine's)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise NewsbiasError(f"serve.host {host!r} does not resolve ({exc.strerror}); use e.g. 127.0.0.1 or 0.0.0.0") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no conflict
        try:
            sock.bind(address)
        except OSError as exc:
            raise NewsbiasError(f"cannot listen on {host}:{port} ({exc.strerror}); another server may hold the port: "
                                f"pick another with --port") from None


def run_server(cfg: ServeConfig, predictor: Optional[Classifier] = None) -> None:
    """Serve ``cfg`` with uvicorn until interrupted (Ctrl-C)."""
    import uvicorn

    check_port(cfg.host, cfg.port)
    app = create_app(cfg, predictor=predictor)
    local_only(app, cfg.host)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level=cfg.log_level,
                timeout_graceful_shutdown=cfg.shutdown_timeout_s, limit_concurrency=cfg.max_connections)


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def local_only(app: Any, host: str) -> None:
    """On a loopback address, answer only requests that name this machine in their Host header: a web page the
    user visits could otherwise reach the server through a DNS name it re-points at 127.0.0.1 (DNS rebinding)."""
    if host in LOOPBACK:
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        app.add_middleware(TrustedHostMiddleware, allowed_hosts=["127.0.0.1", "localhost", "[::1]", "::1"])
