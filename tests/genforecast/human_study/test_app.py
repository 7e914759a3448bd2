"""The web app: the rater's path, blinding, and hostile input (every bad request a 4xx that changes nothing)."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from human_study_helpers import hidden_fields, join, starlette_test_client, synthetic_study, task_of

from genforecast.human_study.app import create_app
from genforecast.human_study.security import MAX_BODY_BYTES, Keys

TestClient = starlette_test_client()


@pytest.fixture
def study(tmp_path: Path) -> Path:
    return synthetic_study(tmp_path / "study", per_variant=4, controls=4, ratings_per_rater=3, pairs_per_rater=2)


@pytest.fixture
def client(study: Path) -> Iterator[TestClient]:
    with TestClient(create_app(study)) as client:
        yield client


def database_state(study: Path) -> tuple:
    """Everything a request could change: raters, assignments, answers (as full rows)."""
    connection = sqlite3.connect(study / "study.sqlite")
    state = tuple(tuple(connection.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall())
                  for table in ("raters", "assignments", "answers", "items"))
    connection.close()
    return state


def open_task(client: TestClient) -> dict[str, str]:
    page = client.get("/rate")
    assert page.status_code == 200
    return hidden_fields(page.text)


RATING = {"likability": "4", "novelty": "2", "origin": "human"}


def post_answer(client: TestClient, **fields: str) -> int:
    return client.post("/answer", data=fields, follow_redirects=False).status_code


def test_a_rater_consents_rates_compares_and_finishes(client: TestClient, study: Path) -> None:
    page = client.get("/")
    assert "How it works" in page.text and page.headers["content-security-policy"].startswith("default-src 'none'")
    join(client)
    for _ in range(3):
        page = client.get("/rate")
        assert task_of(page.text) == "rate"
        assert post_answer(client, **hidden_fields(page.text), **RATING, client_ms="2500") == 303
    for _ in range(2):
        page = client.get("/rate")
        assert task_of(page.text) == "pair"
        assert post_answer(client, **hidden_fields(page.text), choice="right") == 303
    assert task_of(client.get("/rate").text) == "done"
    connection = sqlite3.connect(study / "study.sqlite")
    rows = connection.execute("SELECT likability, novelty, origin, preferred, client_ms, response_ms FROM answers "
                              "ORDER BY assignment_id").fetchall()
    pairs = connection.execute("SELECT item_b FROM assignments WHERE task = 'pair' ORDER BY id").fetchall()
    connection.close()
    assert [row[:3] for row in rows[:3]] == [(4, 2, "human")] * 3 and all(row[4] == 2500 for row in rows[:3])
    assert [row[3] for row in rows[3:]] == [item for (item,) in pairs]  # "right" is the second item
    assert all(row[5] >= 0 for row in rows)


def test_pages_are_blinded(client: TestClient, study: Path) -> None:
    join(client)
    pages = []
    for _ in range(5):
        page = client.get("/rate")
        pages.append(page.text)
        fields = hidden_fields(page.text)
        post_answer(client, **fields, **(RATING if task_of(page.text) == "rate" else {"choice": "left"}))
    secrets = json.loads((study / "secrets.json").read_text())
    for text in pages:
        visible = re.sub(r"/img/[A-Za-z0-9_-]+", "/img/ID", text)
        assert not re.search(r"\b(gan|canh|control|generated)\b", visible, re.IGNORECASE)
        assert ".png" not in visible and "images/" not in visible and str(study) not in visible
        assert secrets["admin_token"] not in visible


def test_answers_for_items_not_assigned_to_the_rater_are_refused(study: Path) -> None:
    with TestClient(create_app(study)) as alice, TestClient(create_app(study)) as bob:
        join(alice)
        join(bob)
        alices = open_task(alice)
        bobs = open_task(bob)
        before = database_state(study)
        assert post_answer(bob, csrf=bobs["csrf"], assignment=alices["assignment"], **RATING) == 404
        assert post_answer(bob, csrf=bobs["csrf"], assignment="999999", **RATING) == 404
        assert post_answer(alice, csrf=bobs["csrf"], assignment=alices["assignment"], **RATING) == 403
        assert database_state(study) == before


@pytest.mark.parametrize("fields", [
    {"likability": "0"}, {"likability": "6"}, {"likability": "3.5"}, {"likability": ""}, {"likability": "+3"},
    {"likability": " 3"}, {"likability": "3\n"}, {"likability": "\u0663"}, {"novelty": "-1"},
    {"novelty": "99999999999999999999"}, {"origin": "robot"}, {"origin": "Human"}, {"origin": None},
    {"choice": "left"}, {"client_ms": "-5"}, {"client_ms": "1e3"}, {"extra": "1"},
])
def test_out_of_range_or_malformed_ratings_are_refused(client: TestClient, study: Path, fields: dict) -> None:
    join(client)
    form = {**open_task(client), **RATING, **fields}
    form = {key: value for key, value in form.items() if value is not None}
    before = database_state(study)
    assert post_answer(client, **form) == 400
    assert database_state(study) == before


def test_pair_answers_accept_only_a_side(study: Path) -> None:
    pairs_only = synthetic_study(study.parent / "pairs", per_variant=3, controls=0, ratings_per_rater=0,
                                 pairs_per_rater=2)
    with TestClient(create_app(pairs_only)) as client:
        join(client)
        form = open_task(client)
        before = database_state(pairs_only)
        for bad in ({"choice": "middle"}, {"choice": ""}, {"choice": "left", "likability": "3"}, {}):
            assert post_answer(client, **form, **bad) == 400
        assert database_state(pairs_only) == before
        assert post_answer(client, **form, choice="left") == 303


def test_a_repeated_answer_is_idempotent_and_a_changed_one_is_refused(client: TestClient, study: Path) -> None:
    join(client)
    form = open_task(client)
    assert post_answer(client, **form, **RATING) == 303
    after_first = database_state(study)
    assert post_answer(client, **form, **RATING) == 303  # a double click or a retried request
    assert post_answer(client, **form, **RATING, client_ms="10") == 303  # timing is not part of the answer
    assert database_state(study) == after_first
    assert post_answer(client, **form, **{**RATING, "likability": "1"}) == 409
    assert database_state(study) == after_first


def test_forged_rater_ids_are_refused(client: TestClient, study: Path) -> None:
    join(client)
    form = open_task(client)
    real = client.cookies["gf_rater"]
    rater_id = real.split(".")[0]
    other_key = Keys("x" * 64, "y" * 32)
    forgeries = [f"{rater_id}.{'0' * 64}", f"{rater_id}x.{real.split('.')[1]}", other_key.sign_rater(rater_id),
                 Keys(json.loads((study / "secrets.json").read_text())["cookie_key"], "y" * 32).sign_rater("nobody"),
                 "' OR 1=1 --", rater_id, f"{rater_id}.{real.split('.')[1]}.x", ""]
    before = database_state(study)
    for forged in forgeries:
        client.cookies.set("gf_rater", forged)
        assert client.get("/rate", follow_redirects=False).status_code in (403, 303), forged
        assert post_answer(client, **form, **RATING) == 403, forged
        assert client.get(f"/img/{rater_id}").status_code in (403, 404)
    assert database_state(study) == before


def test_oversized_bodies_are_refused_before_they_are_read(client: TestClient, study: Path) -> None:
    join(client)
    form = open_task(client)
    before = database_state(study)
    big = "x" * (MAX_BODY_BYTES + 1)
    assert post_answer(client, **form, **RATING, padding=big) == 413
    response = client.post("/answer", content=b"a=" + b"x" * 100, follow_redirects=False,
                           headers={"content-type": "application/x-www-form-urlencoded", "content-length": "10000000"})
    assert response.status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: the stream itself is counted
        for _ in range(MAX_BODY_BYTES // 1000 + 2):
            yield b"x" * 1000

    response = client.post("/answer", content=chunks(), follow_redirects=False,
                           headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 413
    response = client.post("/answer", json={"assignment": form["assignment"], **RATING}, follow_redirects=False)
    assert response.status_code == 415
    assert database_state(study) == before


@pytest.mark.parametrize("path", [
    "/img/../secrets.json", "/img/..%2Fsecrets.json", "/img/%2e%2e%2fstudy.sqlite", "/img/..%2f..%2fetc%2fpasswd",
    "/img/images%2Fx.png", "/img/x%00.png", "/static/../secrets.json", "/static/%2e%2e/secrets.json",
    "/static/..%2fsecrets.json", "/images/", "/study.sqlite", "/secrets.json", "/img/", "/img/%27%20OR%20%271",
])
def test_paths_outside_the_images_are_never_served(client: TestClient, study: Path, path: str) -> None:
    join(client)
    response = client.get(path)
    assert response.status_code in (400, 403, 404, 405)
    assert json.loads((study / "secrets.json").read_text())["admin_token"] not in response.text
    assert b"SQLite format" not in response.content


def test_images_are_served_by_id_to_raters_only(client: TestClient, study: Path) -> None:
    assert client.get("/static/style.css").status_code == 200
    join(client)
    page = client.get("/rate").text
    image_id = re.search(r"/img/([A-Za-z0-9_-]+)", page).group(1)
    response = client.get(f"/img/{image_id}")
    assert response.status_code == 200 and response.content.startswith(b"\x89PNG")
    client.cookies.clear()
    assert client.get(f"/img/{image_id}").status_code == 403
    assert client.get("/img/doesnotexist").status_code in (403, 404)


def test_sql_in_any_field_is_data_not_code(client: TestClient, study: Path) -> None:
    join(client)
    form = open_task(client)
    before = database_state(study)
    injections = ["1; DROP TABLE answers", "1 OR 1=1", "' OR '1'='1", "1); DELETE FROM answers; --"]
    for text in injections:
        assert post_answer(client, csrf=form["csrf"], assignment=text, **RATING) == 400
        assert post_answer(client, **form, **{**RATING, "origin": f"human'); DROP TABLE answers; --{text}"}) == 400
        assert post_answer(client, **{**form, "csrf": text}, **RATING) == 403
        assert client.get(f"/img/{text}").status_code in (403, 404)
    assert database_state(study) == before
    assert post_answer(client, **form, **RATING) == 303  # and the tables are all still there


def test_cross_origin_posts_and_missing_tokens_are_refused(client: TestClient, study: Path) -> None:
    page = client.get("/")
    nonce = hidden_fields(page.text)["csrf"]
    before = database_state(study)
    cases = [({"csrf": nonce, "agree": "yes"}, {"origin": "http://evil.example"}),
             ({"csrf": nonce, "agree": "yes"}, {"origin": "null"}),
             ({"csrf": nonce, "agree": "yes"}, {"sec-fetch-site": "cross-site"}),
             ({"csrf": "guessed", "agree": "yes"}, {}),
             ({"agree": "yes"}, {})]
    for data, headers in cases:
        response = client.post("/consent", data=data, headers=headers, follow_redirects=False)
        assert response.status_code == 403, (data, headers)
    assert client.post("/consent", data={"csrf": nonce}, follow_redirects=False).status_code == 400  # no consent
    assert database_state(study) == before
    join(client)
    form = open_task(client)
    before = database_state(study)
    assert post_answer(client, assignment=form["assignment"], **RATING) == 403
    assert post_answer(client, csrf="0" * 32, assignment=form["assignment"], **RATING) == 403
    response = client.post("/answer", data={**form, **RATING}, headers={"origin": "https://evil.example"},
                           follow_redirects=False)
    assert response.status_code == 403
    assert database_state(study) == before
    same_origin = client.post("/answer", data={**form, **RATING}, headers={"origin": "http://testserver"},
                              follow_redirects=False)
    assert same_origin.status_code == 303


def test_admin_routes_need_the_token(client: TestClient, study: Path) -> None:
    token = json.loads((study / "secrets.json").read_text())["admin_token"]
    join(client)
    post_answer(client, **open_task(client), **RATING)
    for route in ("/admin", "/admin/status.json", "/admin/export.csv", "/admin/export.json"):
        assert client.get(route).status_code == 401
        assert client.get(route, params={"token": token[:-1]}).status_code == 401
        assert client.get(route, headers={"authorization": "Bearer nope"}).status_code == 401
        assert client.get(route, headers={"authorization": f"Bearer {token}"}).status_code == 200
        assert client.get(route, params={"token": token}).status_code == 200
    status = client.get("/admin/status.json", params={"token": token}).json()
    assert status["answers"] == 1 and {group["variant"] for group in status["groups"]} == {"gan", "can", "canh",
                                                                                           "control"}
    exported = client.get("/admin/export.csv", params={"token": token}).text.splitlines()
    assert len(exported) == 2 and exported[0].startswith("assignment_id,rater_id")
    assert client.get("/admin/export.json", params={"token": token}).json()[0]["likability"] == 4
