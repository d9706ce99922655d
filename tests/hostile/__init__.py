"""The hostile suite: attacks from review findings, replayed through the real paths.

Each test plays an attacker the way one would meet chatwright in production — a
model's tool calls through the runtime, a user's requests through the HTTP
server — on SQLite and PostgreSQL, and checks the victim's data in the database
afterwards, not only the answers. Shared fixtures are in ``conftest.py``;
``serving.py`` starts servers with other settings, binds or apps.
"""
