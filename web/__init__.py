"""The web layer of the triage service: request parsing, schemas, errors, metrics, OpenAPI, routes."""
