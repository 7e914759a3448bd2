"""The rating web app: server-rendered pages (FastAPI + Jinja2, plain HTML and a little JS, no build step).

Routes (raters):

* ``GET /``: consent and instructions; ``POST /consent`` creates an anonymous rater and sets its signed cookie.
* ``GET /rate``: the rater's current task (a design to rate, or a pair to choose from), or the thank-you page.
* ``POST /answer``: one answer; committed to the database before the reply, which redirects to ``/rate``.
* ``GET /img/{id}``: an image by its random id (to a rater or the admin), from the study's images folder only.

Routes (admin, token required): ``GET /admin`` (progress page), ``/admin/status.json``, ``/admin/export.csv``,
``/admin/export.json``.

Pages never name a variant, a file or a path: images are addressed by random ids. Answers that do not fit the
rater's open assignment get a 4xx and change nothing (see :mod:`genforecast.human_study.security`).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool

from genforecast.human_study import storage
from genforecast.human_study.assignment import AssignmentPlan, answer_and_assign_next, next_assignment
from genforecast.human_study.config import StudyConfig, load_study_config
from genforecast.human_study.create import CONFIG_NAME, IMAGES_DIR, SECRETS_NAME
from genforecast.human_study.export import answers_csv
from genforecast.human_study.security import (
    TOKEN_PATTERN,
    Keys,
    Rejected,
    check_same_origin,
    new_token,
    read_form,
    tokens_equal,
)

PACKAGE = Path(__file__).resolve().parent
RATER_COOKIE = "gf_rater"
NONCE_COOKIE = "gf_nonce"
RATER_COOKIE_DAYS = 30
RATING_VALUE = re.compile(r"[1-5]")
ASSIGNMENT_ID = re.compile(r"[0-9]{1,12}")
CLIENT_MS = re.compile(r"[0-9]{1,9}")
ANSWER_FIELDS = {"csrf", "assignment", "likability", "novelty", "origin", "choice", "client_ms"}
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'none'; img-src 'self'; style-src 'self'; script-src 'self'; "
                                 b"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    # Not no-referrer: under that policy browsers send "Origin: null" with form posts, which the same-origin
    # check must refuse. same-origin still tells other sites nothing.
    (b"referrer-policy", b"same-origin"),
]


class SecurityHeaders:
    """ASGI middleware adding :data:`SECURITY_HEADERS` to every HTTP response (a plain ASGI wrapper: no extra
    task per request, unlike ``BaseHTTPMiddleware``)."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + SECURITY_HEADERS
            await send(message)

        await self.app(scope, receive, send_with_headers)


class Study:
    """What a server holds about one study folder: its settings, secrets, database and templates."""

    def __init__(self, study_dir: str | Path) -> None:
        self.dir = Path(study_dir).resolve()
        self.config: StudyConfig = load_study_config(self.dir / CONFIG_NAME)
        self.keys = Keys.read(self.dir / SECRETS_NAME)
        self.db = storage.Database(self.dir / storage.DATABASE_NAME)
        self.images_dir = (self.dir / IMAGES_DIR).resolve()
        self.plan = AssignmentPlan(self.config.ratings_per_rater, self.config.pairs_per_rater,
                                   self.config.pair_controls)
        self.templates = Environment(loader=FileSystemLoader(PACKAGE / "templates"),
                                     autoescape=select_autoescape(["html"]))

    def page(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        context.setdefault("questions", self.config.questions)
        html = self.templates.get_template(template).render(**context)
        return HTMLResponse(html, status_code=status, headers={"cache-control": "no-store"})

    def add_rater(self, rater_id: str) -> None:
        # On the calling (worker) thread: the connection property is per thread, so it must not be read on the
        # event loop's thread and handed to a worker.
        storage.add_rater(self.db.connection, rater_id)

    def rater(self, request: Request) -> str | None:
        """The verified rater of a request, or None. A cookie that fails verification raises 403."""
        cookie = request.cookies.get(RATER_COOKIE)
        if cookie is None:
            return None
        rater_id = self.keys.verify_rater(cookie)
        if rater_id is None or not storage.rater_exists(self.db.connection, rater_id):
            raise Rejected(403, "unknown rater id")
        return rater_id


def create_app(study_dir: str | Path) -> FastAPI:
    """The app serving one study folder (written by ``create``)."""
    study = Study(study_dir)
    app = FastAPI(title="genforecast human study", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.study = study
    app.add_middleware(SecurityHeaders)
    app.mount("/static", StaticFiles(directory=PACKAGE / "static"), name="static")

    @app.exception_handler(Rejected)
    async def rejected(request: Request, error: Rejected) -> Response:
        response = study.page("error.html", status=error.status, reason=error.reason)
        if error.status == 403 and error.reason == "unknown rater id":
            response.delete_cookie(RATER_COOKIE, path="/")
        if error.status == 401:
            response.headers["www-authenticate"] = "Bearer"
        return response

    @app.get("/", response_class=HTMLResponse)
    def consent(request: Request) -> Response:
        if study.rater(request) is not None:
            return RedirectResponse("/rate", status_code=303)
        nonce = new_token()
        response = study.page("consent.html", csrf=nonce, total=study.plan.ratings_per_rater,
                              pairs=study.plan.pairs_per_rater)
        response.set_cookie(NONCE_COOKIE, study.keys.sign_nonce(nonce), httponly=True, samesite="lax", path="/")
        return response

    @app.post("/consent")
    async def give_consent(request: Request) -> Response:
        check_same_origin(request)
        form = await read_form(request)
        nonce = study.keys.verify_nonce(request.cookies.get(NONCE_COOKIE))
        if nonce is None or not tokens_equal(form.get("csrf"), nonce):
            raise Rejected(403, "the form has expired or comes from another site: reload the start page")
        if form.get("agree") != "yes":
            raise Rejected(400, "please tick the consent box to take part")
        if await run_in_threadpool(study.rater, request) is not None:
            return RedirectResponse("/rate", status_code=303)
        rater_id = new_token()
        await run_in_threadpool(study.add_rater, rater_id)
        response = RedirectResponse("/rate", status_code=303)
        response.set_cookie(RATER_COOKIE, study.keys.sign_rater(rater_id), max_age=RATER_COOKIE_DAYS * 86400,
                            httponly=True, samesite="lax", path="/")
        response.delete_cookie(NONCE_COOKIE, path="/")
        return response

    @app.get("/rate", response_class=HTMLResponse)
    def rate(request: Request) -> Response:
        rater_id = study.rater(request)
        if rater_id is None:
            return RedirectResponse("/", status_code=303)
        connection = study.db.connection
        assignment = next_assignment(connection, rater_id, study.plan)
        if assignment is None:
            return study.page("done.html")
        context = {"assignment": assignment.id, "csrf": study.keys.csrf_for_rater(rater_id),
                   "display_px": study.config.display_px}
        if assignment.task == "rate":
            return study.page("rate.html", item=assignment.item_a, number=assignment.position + 1,
                              total=study.plan.ratings_per_rater, **context)
        return study.page("pair.html", left=assignment.item_a, right=assignment.item_b,
                          number=assignment.position + 1 - study.plan.ratings_per_rater,
                          total=study.plan.pairs_per_rater, **context)

    @app.post("/answer")
    async def answer(request: Request) -> Response:
        check_same_origin(request)
        rater_id = await run_in_threadpool(study.rater, request)
        if rater_id is None:
            raise Rejected(403, "no rater id: start from the first page")
        form = await read_form(request)
        if not tokens_equal(form.get("csrf"), study.keys.csrf_for_rater(rater_id)):
            raise Rejected(403, "the form has expired or comes from another site")
        await run_in_threadpool(store_answer, study, rater_id, form)
        return RedirectResponse("/rate", status_code=303)

    @app.get("/favicon.ico")
    def favicon() -> Response:
        return Response(status_code=204)  # browsers ask for one; an empty answer keeps their consoles quiet

    @app.get("/img/{item_id}")
    def image(item_id: str, request: Request) -> Response:
        if not TOKEN_PATTERN.fullmatch(item_id):
            raise Rejected(404, "no such image")
        if not study.keys.is_admin(request) and study.rater(request) is None:
            raise Rejected(403, "images are shown to raters only")
        file = storage.item_file(study.db.connection, item_id)
        path = (study.dir / file).resolve() if file is not None else None
        if path is None or path.parent != study.images_dir or not path.is_file():
            raise Rejected(404, "no such image")
        return FileResponse(path, media_type="image/png", headers={"cache-control": "private, max-age=3600"})

    def require_admin(request: Request) -> None:
        if not study.keys.is_admin(request):
            raise Rejected(401, "admin token required")

    @app.get("/admin", response_class=HTMLResponse)
    def admin(request: Request) -> Response:
        require_admin(request)
        connection = study.db.connection
        return study.page("admin.html", name=study.config.name, counts=storage.counts(connection),
                          groups=storage.progress(connection, study.config.ratings_per_item),
                          target=study.config.ratings_per_item, token=study.keys.admin_token)

    @app.get("/admin/status.json")
    def admin_status(request: Request) -> Response:
        require_admin(request)
        connection = study.db.connection
        return JSONResponse({"name": study.config.name, "target": study.config.ratings_per_item,
                             **storage.counts(connection),
                             "groups": storage.progress(connection, study.config.ratings_per_item)})

    @app.get("/admin/export.csv")
    def export_csv(request: Request) -> Response:
        require_admin(request)
        return Response(answers_csv(storage.all_answers(study.db.connection)), media_type="text/csv",
                        headers={"content-disposition": 'attachment; filename="answers.csv"'})

    @app.get("/admin/export.json")
    def export_json(request: Request) -> Response:
        require_admin(request)
        return JSONResponse(storage.all_answers(study.db.connection),
                            headers={"content-disposition": 'attachment; filename="answers.json"'})

    return app


def parse_answer(assignment: storage.Assignment, form: dict[str, str]) -> storage.Answer:
    """Validate a submitted form against its assignment's task; :class:`Rejected` (400) when anything is off."""
    unknown = set(form) - ANSWER_FIELDS
    if unknown:
        raise Rejected(400, f"unexpected fields {sorted(unknown)}")
    client_ms = form.get("client_ms") or None
    if client_ms is not None and not CLIENT_MS.fullmatch(client_ms):
        raise Rejected(400, "client_ms must be a whole number of milliseconds")
    client = int(client_ms) if client_ms is not None else None
    if assignment.task == "rate":
        if "choice" in form:
            raise Rejected(400, "a rating task has no choice")
        values = [form.get(name, "") for name in ("likability", "novelty")]
        if not all(RATING_VALUE.fullmatch(value) for value in values):
            raise Rejected(400, "likability and novelty must be whole numbers from 1 to 5")
        if form.get("origin") not in ("human", "computer"):
            raise Rejected(400, "origin must be human or computer")
        return storage.Answer(likability=int(values[0]), novelty=int(values[1]), origin=form["origin"],
                              client_ms=client)
    if {"likability", "novelty", "origin"} & set(form):
        raise Rejected(400, "a pairwise task has only a choice")
    choice = form.get("choice")
    if choice not in ("left", "right"):
        raise Rejected(400, "choice must be left or right")
    return storage.Answer(preferred=assignment.item_a if choice == "left" else assignment.item_b, client_ms=client)


def store_answer(study: Study, rater_id: str, form: dict[str, str]) -> None:
    """Check that the form answers one of this rater's assignments, validly, and commit it (idempotently)."""
    assignment_id = form.get("assignment", "")
    if not ASSIGNMENT_ID.fullmatch(assignment_id):
        raise Rejected(400, "malformed assignment id")
    connection = study.db.connection
    assignment = storage.get_assignment(connection, int(assignment_id))
    if assignment is None or assignment.rater_id != rater_id:
        raise Rejected(404, "this design was not assigned to you")
    answer = parse_answer(assignment, form)
    try:
        answer_and_assign_next(connection, assignment, answer, study.plan)
    except storage.AnswerConflict as error:
        raise Rejected(409, "this design already has a different answer from you") from error
