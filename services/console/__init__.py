"""The operator console: server-rendered pages over the four services' public HTTP APIs (owns no business data)."""
