"""The hostile suite: attacks from review findings, replayed through the real paths.

Each test plays an attacker the way one would meet chatwright in production — a
scripted model's tool calls and a user's requests through the HTTP server, with
two users' JWTs — on SQLite, PostgreSQL and the ``supabase`` backend (as a role
subject to row-level security), and checks the victim's data in the database
afterwards, not only the answers. One file per topic; shared fixtures and the
attack helpers are in ``conftest.py``. A hole found and not fixed yet is a
strict xfail naming the finding, so the test fails the day it is fixed and the
mark must go. ``serving.py`` starts servers with other settings, binds or apps.
"""
