"""The example web app: a price board in SQLite, live in the browser (docs/example-app.md)."""
