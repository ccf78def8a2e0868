"""The reviewer console: `lifeguard review serve`. Server-rendered pages (Flask, Jinja templates in
review/templates/), no front-end build step.

Every page but the login needs a session of a named account (`lifeguard review add-reviewer`), whose
password is kept as a salted scrypt hash; every form carries a CSRF token (Flask-WTF), and the session
cookie is HTTP-only and SameSite. Roles nest: a reviewer works the queue, a senior also takes escalated
items, an admin also manages accounts. The account is read again on every request, so a changed role or
a removed account takes effect at once. Keyboard: n claims the next item; c, o and e confirm, overturn and
escalate it.
"""
from __future__ import annotations

import functools
import secrets
import time
from typing import Callable

from flask import Flask, abort, flash, g, redirect, render_template, request, session, url_for
from flask_wtf.csrf import CSRFProtect
from werkzeug.security import check_password_hash, generate_password_hash

from lifeguard.config import LifeguardConfig
from review.store import ReviewError, ReviewStore
from udfs.image_model import MODELLED_CATEGORIES, UNMODELLED_CATEGORIES
from udfs.text_model import CATEGORIES as TEXT_CATEGORIES

ROLES = ("reviewer", "senior", "admin")  # each may do what the ones before it may
# What a reviewer may confirm: every category a text or image signal names, modelled or not.
VERDICT_CATEGORIES = (*TEXT_CATEGORIES, *MODELLED_CATEGORIES, *UNMODELLED_CATEGORIES)
MIN_PASSWORD_CHARS = 12


def password_hash(password: str) -> str:
    if len(password) < MIN_PASSWORD_CHARS:
        raise ReviewError(f"a password has at least {MIN_PASSWORD_CHARS} characters")
    return generate_password_hash(password)  # scrypt with a random salt


def create_app(cfg: LifeguardConfig) -> Flask:
    app = Flask(__name__)
    secret = cfg.review.console_secret
    # Without a configured secret, sessions last as long as this process.
    app.config.update(SECRET_KEY=secret.get_secret_value() if secret else secrets.token_hex(32),
                      SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax",
                      WTF_CSRF_TIME_LIMIT=None)  # a token lives as long as its session
    CSRFProtect(app)

    @app.template_filter("age")
    def age(created_ts: int) -> str:
        minutes = max(0, int(time.time() - created_ts / 1000)) // 60
        return f"{minutes} min ago" if minutes < 120 else f"{minutes // 60} h ago"

    @app.before_request
    def open_store():
        g.store = ReviewStore.connect(cfg.review)
        g.account = g.store.reviewer(session["reviewer"]) if "reviewer" in session else None

    @app.teardown_request
    def close_store(_error):
        if "store" in g:
            g.store.close()

    def needs(role: str) -> Callable:
        def decorator(view):
            @functools.wraps(view)
            def guarded(**kwargs):
                if g.account is None:
                    return redirect(url_for("login"))
                if ROLES.index(g.account["role"]) < ROLES.index(role):
                    abort(403)
                return view(**kwargs)
            return guarded
        return decorator

    @app.route("/login", methods=["GET", "POST"])
    def login():
        if request.method == "POST":
            account = g.store.reviewer(request.form.get("name", ""))
            if account and check_password_hash(account["password_hash"], request.form.get("password", "")):
                session.clear()
                session["reviewer"] = account["name"]
                return redirect(url_for("queue"))
            flash("Unknown name or wrong password.")
        return render_template("login.html")

    @app.post("/logout")
    def logout():
        session.clear()
        return redirect(url_for("login"))

    @app.get("/")
    @needs("reviewer")
    def queue():
        return render_template("queue.html", items=g.store.undecided())

    @app.post("/claim")
    @needs("reviewer")
    def claim():
        item = g.store.claim_next(g.account["name"], senior=g.account["role"] != "reviewer")
        if item is None:
            flash("Nothing waits for you.")
            return redirect(url_for("queue"))
        return redirect(url_for("item", event_id=item.event_id))

    @app.get("/items/<event_id>")
    @needs("reviewer")
    def item(event_id: str):
        claimed = g.store.claimed_item(event_id, g.account["name"])
        if claimed is None:
            flash(f"You hold no claim on {event_id}: claim the next item.")
            return redirect(url_for("queue"))
        chosen = claimed.categories[0] if claimed.categories else VERDICT_CATEGORIES[0]
        return render_template("item.html", item=claimed, categories=VERDICT_CATEGORIES, chosen=chosen)

    @app.post("/items/<event_id>/decide")
    @needs("reviewer")
    def decide(event_id: str):
        verdict = request.form.get("verdict")
        if verdict not in ("confirm", "overturn", "escalate"):
            abort(400)
        category = request.form.get("category") if verdict == "confirm" else None
        try:
            g.store.decide(event_id, g.account["name"], verdict, category, request.form.get("note", "")[:500])
            flash(f"{event_id}: {verdict}" + (f" ({category})" if category else "") + ".")
        except ReviewError as error:
            flash(str(error))
        return redirect(url_for("queue"))

    @app.route("/reviewers", methods=["GET", "POST"])
    @needs("admin")
    def reviewers():
        if request.method == "POST":
            role = request.form.get("role")
            if role not in ROLES or not request.form.get("name"):
                abort(400)
            try:
                g.store.add_reviewer(request.form["name"], role, password_hash(request.form.get("password", "")))
                flash(f"Saved {request.form['name']} ({role}).")
            except ReviewError as error:
                flash(str(error))
        return render_template("reviewers.html", accounts=g.store.reviewers(), roles=ROLES)

    return app
